"""RFC 5465 NOTIFY: what one session asked to be told, and the telling.

A ``Notifier`` lives on the session from NOTIFY SET to NOTIFY NONE (or the end of the session).
It listens on the change hub (``ctx.hub``) to every folder of the account that one of its
filters watches for message events, and to the account's folder and subscription lists. A
listener only marks the folder (or the list) dirty and wakes the session; the session then
calls ``report`` between commands, in IDLE and after each command, which reads the dirty
folders' counters in one store call and tells what moved:

* a folder other than the selected one: ``STATUS name (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)``
  for new or expunged messages, ``STATUS name (UIDVALIDITY UNSEEN)`` for flag changes (with
  HIGHESTMODSEQ under CONDSTORE), as Dovecot does (imap-notify.c);
* the folder list: ``LIST`` of a created folder, ``LIST (\\NonExistent)`` of a deleted one,
  ``LIST ... ("OLDNAME" (old))`` of a renamed one (MailboxName); ``LIST (\\Subscribed)`` or
  without it for a (un)subscribed name (SubscriptionChange);
* the selected folder (SELECTED / SELECTED-DELAYED): its EXISTS / EXPUNGE / FETCH between
  commands as well as after them (``ImapSession.push``), and MessageNew's FETCH list for each
  new message (``fetch_new``).

Bounded: at most imap.notify_max_events notifications wait for one session (folders whose
counters moved, list changes, new messages to FETCH); past that the session is told ``* OK
[NOTIFICATIONOVERFLOW]`` and notifications stop, as RFC 5465 5.8 says (the client then
resynchronises and issues NOTIFY SET again). A NOTIFY naming more than MAX_NAMES mailboxes is
refused with NO [NOTIFICATIONOVERFLOW], as Dovecot refuses more than 100.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import api
from ..store.api import SEP
from . import responses as R
from .listing import list_line
from .notify_syntax import EventGroup, Notify

if TYPE_CHECKING:
    from .session import ImapSession

#: the events this server tells (AnnotationChange needs ANNOTATE; the METADATA ones are not done)
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
#: the most mailbox names one NOTIFY SET may give (Dovecot: IMAP_NOTIFY_MAX_NAMES_PER_NS)
MAX_NAMES = 100
_MESSAGE = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})


@dataclass
class Counters:
    """What the client was last told of a folder (or what it would have seen)."""

    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    modseq: int

    @classmethod
    def of(cls, st: api.FolderStatus) -> "Counters":
        i = st.info
        return cls(i.uidvalidity, i.uidnext, i.message_count, st.unseen, i.highestmodseq)


def _view(store, account_id: int) -> tuple[list, set[str]]:
    return store.list_folders(account_id), set(store.subscriptions(account_id))


def _statuses(store, account_id: int, names: list[str]) -> list[api.FolderStatus]:
    return store.folder_status(account_id, names)


def _children_attr(name: str, names) -> str:
    prefix = name + SEP
    return "\\HasChildren" if any(n.startswith(prefix) for n in names) else "\\HasNoChildren"


class Notifier:
    def __init__(self, session: "ImapSession", cmd: Notify) -> None:
        self.session = session
        self.groups: tuple[EventGroup, ...] = tuple(g for g in cmd.groups if g.filter not in ("SELECTED",
                                                                                              "SELECTED-DELAYED"))
        sel = cmd.selected
        #: the selected folder's events, None when SELECTED was not given (SELECTED NONE)
        self.selected_events: frozenset[str] = frozenset(sel.events) if sel else frozenset()
        #: SELECTED-DELAYED: expunges wait for a command that may carry them (RFC 5465 6.1)
        self.delayed = sel is not None and sel.filter == "SELECTED-DELAYED"
        self.fetch = sel.fetch if sel is not None else ()
        self.limit = session.config.imap.notify_max_events
        self.names: dict[int, str] = {}
        self.subscribed: set[str] = set()
        self.known: dict[int, Counters] = {}
        self.dirty: set[int] = set()
        self.list_dirty = False
        self._watching: set[int] = set()
        self._loop = asyncio.get_running_loop()
        self._account = session.account_id

    # -- which folders, which events -------------------------------------------------------------------
    def events_for(self, name: str) -> set[str]:
        out: set[str] = set()
        for g in self.groups:
            if g.filter in ("INBOXES", "PERSONAL"):  # one user's folders: all of them are personal
                hit = True
            elif g.filter == "SUBSCRIBED":
                hit = name in self.subscribed
            elif g.filter == "SUBTREE":
                hit = any(name == m or name.startswith(m + SEP) for m in g.mailboxes)
            else:
                hit = name in g.mailboxes
            if hit:
                out.update(g.events)
        return out

    @property
    def pushes_selected(self) -> bool:
        return bool(self.selected_events)

    # -- the hub -------------------------------------------------------------------------------------------
    def _on_folder(self, folder_id: int) -> None:
        self.dirty.add(folder_id)
        self._wake()

    def _on_account(self, account_id: int) -> None:
        self.list_dirty = True
        self._wake()

    def _wake(self) -> None:
        wake = self.session.wake
        if wake is not None:
            wake.set()

    def _rewatch(self) -> set[int]:
        """Listen to the folders the filters now watch for message events; those newly watched."""
        hub = self.session.ctx.hub
        want = {fid for fid, name in self.names.items() if self.events_for(name) & _MESSAGE}
        for fid in self._watching - want:
            hub.unsubscribe(fid, self._on_folder, self._loop)
            self.known.pop(fid, None)
        added = want - self._watching
        for fid in added:
            hub.subscribe(fid, self._on_folder, self._loop)
        self._watching = want
        return added

    async def _baseline(self, folder_ids) -> list[api.FolderStatus]:
        """Read the counters of newly watched folders: what later changes are told against."""
        s = self.session
        names = [self.names[fid] for fid in sorted(folder_ids) if fid not in self.known]
        found = await s.heavy(_statuses, s.store, self._account, names) if names else []
        for st in found:
            self.known[st.info.id] = Counters.of(st)
        return found

    async def start(self, send_status: bool) -> None:
        """Read the account's folders, subscriptions and the counters of the watched folders;
        listen; with NOTIFY SET STATUS, tell those counters (before the tagged OK)."""
        s = self.session
        s.ctx.hub.subscribe_account(self._account, self._on_account, self._loop)
        folders, self.subscribed = await s.ctx.run(_view, s.store, self._account)
        self.names = {f.id: f.name for f in folders}
        for st in await self._baseline(self._rewatch()):
            if send_status and not self._is_selected(st.info.id):
                await s.untagged(self._status_line(st.info.name, self.known[st.info.id], full=True))

    def stop(self) -> None:
        hub = self.session.ctx.hub
        hub.unsubscribe_account(self._account, self._on_account, self._loop)
        for fid in self._watching:
            hub.unsubscribe(fid, self._on_folder, self._loop)
        self._watching = set()

    # -- telling ----------------------------------------------------------------------------------------------
    def _is_selected(self, folder_id: int) -> bool:
        sel = self.session.selected
        return sel is not None and sel.folder_id == folder_id

    def _status_line(self, name: str, c: Counters, full: bool) -> str:
        items = (f"MESSAGES {c.messages} UIDNEXT {c.uidnext} UIDVALIDITY {c.uidvalidity} UNSEEN {c.unseen}" if full
                 else f"UIDVALIDITY {c.uidvalidity} UNSEEN {c.unseen}")
        if self.session.condstore:
            items += f" HIGHESTMODSEQ {c.modseq}"
        return f"STATUS {self.session.mailbox_wire(name)} ({items})"

    def pending(self) -> bool:
        return bool(self.list_dirty or self.dirty - self._selected_ids())

    def _selected_ids(self) -> set[int]:
        sel = self.session.selected
        return {sel.folder_id} if sel is not None else set()

    async def overflow(self) -> None:
        """RFC 5465 5.8: tell the client, and stop (as after NOTIFY NONE)."""
        s = self.session
        self.stop()
        s.notifier = None
        await s.untagged(R.OK_NOTIFICATIONOVERFLOW.line())

    async def report(self) -> None:
        """Tell what changed in the folder lists and in the watched folders but the selected one."""
        s = self.session
        lines: list[str] = []
        if self.list_dirty:
            self.list_dirty = False
            lines.extend(await self._list_changes())
        dirty = self.dirty - self._selected_ids()
        if dirty:
            # Counted after the read, not before: a folder announced whose counters did not move
            # owes nothing (the folder watcher's first look at a folder newly watched announces
            # it, as any false yes of the hub may), and the read is one call for at most the
            # account's folders
            self.dirty -= dirty
            names = [self.names[fid] for fid in dirty if fid in self.names]
            for st in await s.ctx.run(_statuses, s.store, self._account, names) if names else ():
                line = self._status_change(st)
                if line:
                    lines.append(line)
        if s.notifier is not self:
            return  # stopped meanwhile (NOTIFY NONE in IDLE is impossible, but LOGOUT is not)
        if len(lines) > self.limit:
            await self.overflow()
            return
        for line in lines:
            await s.untagged(line)

    def _status_change(self, st: api.FolderStatus) -> str | None:
        now = Counters.of(st)
        before = self.known.get(st.info.id)
        self.known[st.info.id] = now
        if before is None:
            return None  # not watched when it changed: these counters are its starting point
        wanted = self.events_for(st.info.name)
        appended = now.uidnext - before.uidnext
        expunged = before.messages + appended - now.messages
        if (now.uidvalidity != before.uidvalidity or (appended > 0 and "MessageNew" in wanted)
                or (expunged > 0 and "MessageExpunge" in wanted)):
            return self._status_line(st.info.name, now, full=True)
        flags_moved = now.unseen != before.unseen or (self.session.condstore and now.modseq != before.modseq)
        if "FlagChange" in wanted and flags_moved and not appended and not expunged:
            return self._status_line(st.info.name, now, full=False)
        return None

    async def _list_changes(self) -> list[str]:
        """The LIST responses that tell how the folder and subscription lists moved."""
        s = self.session
        folders, subscribed = await s.ctx.run(_view, s.store, self._account)
        names = {f.id: f.name for f in folders}
        all_names = set(names.values())
        lines: list[str] = []

        def listed(name: str, attrs: list[str], old: str | None = None) -> str:
            line = list_line("LIST", attrs, s.mailbox_wire(name))
            if old is not None:
                line += f' ("OLDNAME" ({s.mailbox_wire(old)}))'
            return line

        def attrs_of(name: str) -> list[str]:
            if name not in all_names:
                return ["\\NonExistent"]
            return [_children_attr(name, all_names)] + (["\\Subscribed"] if name in subscribed else [])

        for fid, old in sorted(self.names.items(), key=lambda x: x[1]):
            new = names.get(fid)
            if new is None:
                if "MailboxName" in self.events_for(old):
                    lines.append(listed(old, ["\\NonExistent"]))
            elif new != old and "MailboxName" in (self.events_for(old) | self._events_after(new, subscribed)):
                lines.append(listed(new, attrs_of(new), old))
        for fid, new in sorted(names.items(), key=lambda x: x[1]):
            if fid not in self.names and "MailboxName" in self._events_after(new, subscribed):
                lines.append(listed(new, attrs_of(new)))
        for name in sorted(subscribed ^ self.subscribed):
            if "SubscriptionChange" in (self.events_for(name) | self._events_after(name, subscribed)):
                attrs = attrs_of(name)
                if name not in subscribed:
                    attrs = [a for a in attrs if a != "\\Subscribed"]
                lines.append(listed(name, attrs))
        for f in folders:
            if f.id not in self.names:
                # a folder new to the account: told against an empty one, so that mail that
                # reached it before this report is not taken for its starting point
                self.known[f.id] = Counters(f.uidvalidity, 1, 0, 0, 1)
                self.dirty.add(f.id)
        self.names, self.subscribed = names, subscribed
        await self._baseline(self._rewatch())  # e.g. a name now subscribed, under SUBSCRIBED
        return lines

    def _events_after(self, name: str, subscribed: set[str]) -> set[str]:
        old, self.subscribed = self.subscribed, subscribed
        try:
            return self.events_for(name)
        finally:
            self.subscribed = old

    async def fetch_new(self, uids: list[int]) -> None:
        """RFC 5465 5.2: MessageNew (fetch-att ...) under SELECTED: a FETCH response of those
        items for each new message of the selected folder, after its EXISTS."""
        from .handlers_message import send_fetch_of

        if not self.fetch or "MessageNew" not in self.selected_events or not uids:
            return
        if len(uids) > self.limit:
            await self.overflow()
            return
        await send_fetch_of(self.session, uids, self.fetch)

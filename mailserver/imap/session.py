"""One IMAP connection: read a command, check the state, call its handler, write the replies,
then tell the client what other sessions changed (RFC 3501 5.2, 7.4.1).

Commands are registered in ``registry`` by the handler modules (``handlers_auth``,
``handlers_mailbox``, ``handlers_message``); each handler is ``async def do_x(session, cmd) ->
Reply``; an error raised by one is mapped to its reply in one place here
(``responses.error_response``), never with the exception's text.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
from array import array
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, NoReturn, TypeVar

from ..errors import CivicmailError, LimitExceeded
from ..store.api import Changes
from ..store.outage import is_outage
from ..timeouts import within
from . import responses as R
from .codec import format_uid_set, mailbox_wire
from .commands import Invalid
from .compress import InflatingReader, deflate, deflater
from .context import SearchContext, additions, contexts_expunged, matching, removals, sorted_uids, update_lines
from .framing import Closed, Framed, Refused, read_command, read_line
from .pacing import Pacer
from .parser import parse
from .registry import ANY, AUTH, AUTHED, LOGOUT, NOT_AUTH, SEL, SELECTED, capabilities
from .selected import SelectedFolder, flag_text

if TYPE_CHECKING:
    from ..registry.auth import Principal
    from ..store.api import MailStore
    from ..server import ServerContext
    from .service import ImapService

__all__ = ["ImapSession", "Logout", "AlreadyAnswered", "ANY", "AUTH", "AUTHED", "LOGOUT", "NOT_AUTH", "SEL",
           "SELECTED"]

log = logging.getLogger("civicmail.imap")
T = TypeVar("T")

#: the reply to an Invalid command by its reason (others: BAD syntax error)
_INVALID_REPLIES = {"BADCHARSET": R.NO_BADCHARSET, "TOODEEP": R.BAD_TOO_DEEP, "TOOMANYKEYS": R.BAD_TOO_MANY_KEYS,
                    "BADNAME": R.NO_BAD_NAME, "TOOMANYPARTS": R.BAD_TOO_MANY_PARTS}
#: the metrics' command label of a command that did not parse
INVALID = "(invalid)"
_WRITE_HIGH_WATER = 256 * 1024
#: output larger than this is compressed (COMPRESS=DEFLATE) in a store thread, not on the loop
_DEFLATE_IN_THREAD = 256 * 1024
#: a command whose lines (its literals left out) are longer than this is parsed on the heavy lane,
#: as one of its user's jobs (before login: its address's): a 64 KiB line of small tokens (a
#: SEARCH of 16,000 NOTs) costs 50 to 150 ms to read into tokens, and on the event loop a few
#: connections sending them back to back held every other client for seconds. Real commands are
#: far shorter; an APPEND's message is a literal, so it stays on the loop
_PARSE_IN_THREAD = 2048


class _Looked(NamedTuple):
    """A look at the selected folder made in the same job as a command's store work."""

    sel: SelectedFolder
    #: (modseq, max_uid, exists) of the view the look started from
    seen: tuple[int, int, int]
    forced: bool
    #: the hub's count of announced changes of the folder before the look (``ChangeHub.version``)
    version: int
    changes: "Changes | None"


#: ``_Looked.changes`` of a look left out: nothing but the session's own write can be there
UNLOOKED = Changes(0, 0, [], [], None)


def _look_after(store: "MailStore", account_id: int, folder_id: int, modseq: int, max_uid: int, exists: int, force: bool,
                quiet: int | None, view: "array | None", result: T) -> tuple[T, tuple]:
    """In a store thread, after a write's COMMIT: what changed in the selected folder since
    ``modseq`` (after the session's own write, when the result says it saw no other).

    ``quiet``: the hub's version of the folder before the write was queued, when no change
    was pending then (else None). If the write saw no other (``modseq_before``), it is the only
    change of the folder up to its COMMIT; if the version then moved by exactly its own
    announcement, nobody else's was announced since either, and the look is left out (a
    statement and a round trip a STORE): a change committed after ours is announced after
    its COMMIT, so its announcement moves the version later and marks the session
    ``pending`` (or, from another node or process, arrives later still and does), and the
    next command (or IDLE) looks then. A batch of the write lane announces a folder once
    for every writer in it (``ChangeHub.held``), so another session's write in the same
    COMMIT moves the version by two and the look is made.

    By the same reasoning, a write that tells its own change (``own``: an APPEND's message, an
    EXPUNGE's UIDs, ``api.AppendedMany`` and ``api.Expunged``) after a MODSEQ the session had
    seen makes no look: that change is what the look would have found. ``view``: for an
    EXPUNGE, the session's UIDs (its task does not change them while it awaits the write),
    which less the expunged ones are the folder's; None when expunges are owed to it."""
    before = getattr(result, "modseq_before", 0)
    if before and before == modseq:
        modseq = result.modseq_after
        if quiet is not None and not force and store.hub.version(folder_id) == quiet + 1:
            return result, ((modseq, max_uid, exists), force, quiet + 1, UNLOOKED)
    own = getattr(result, "own", None)
    if (own is not None and own.highestmodseq == modseq + 1 and quiet is not None
            and store.hub.version(folder_id) == quiet + 1):
        if own.new and own.new[0][0] > max_uid and not force:  # APPEND
            return result, ((modseq, max_uid, exists), force, quiet + 1, own)
        if not own.new and view is not None:  # EXPUNGE
            gone = set(result)
            present = array("q", (uid for uid in view if uid not in gone))
            return result, ((modseq, max_uid, exists), force, quiet + 1, dataclasses.replace(own, present=present))
    version = store.hub.version(folder_id)  # before the look: see ChangeHub.version
    changes = store.changes_since(account_id, folder_id, modseq, max_uid, exists, force)
    return result, ((modseq, max_uid, exists), force, version, changes)


class Logout(Exception):
    """End the session after the tagged reply."""


class AlreadyAnswered(Exception):
    """The handler wrote its own tagged reply (STARTTLS, before the handshake)."""


class ImapSession:
    __slots__ = ("ctx", "service", "reader", "writer", "tls_active", "peer_ip", "state", "principal", "account_id",
                 "selected", "contexts", "pending", "wake", "notifier", "rev2", "condstore", "qresync", "utf8",
                 "preauth_slot",
                 "_login_deadline", "_limit_key", "_pacer", "_out", "_out_size", "_deflate", "_deflating",
                 "_expunge_ok", "_looked", "_task", "_watchdog", "_read_deadline", "_reading", "_silent",
                 "_limits", "__weakref__")

    def __init__(self, ctx: "ServerContext", service: "ImapService", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, tls_active: bool) -> None:
        self.ctx = ctx
        self.service = service
        self.reader = reader
        self.writer = writer
        self.tls_active = tls_active
        peer = writer.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else "?"
        self.state = NOT_AUTH
        self.principal: Principal | None = None
        self.account_id = 0
        self.selected: SelectedFolder | None = None
        #: RFC 5267 searches kept up to date, by tag (they end with the selection)
        self.contexts: dict[str, SearchContext] = {}
        #: another session (or process) changed the selected folder; look before the next reply
        self.pending = False
        #: set while in IDLE or under NOTIFY, so that a change wakes the session at once
        self.wake: asyncio.Event | None = None
        #: RFC 5465: what NOTIFY SET asked to be told (notify.Notifier), None without NOTIFY
        self.notifier: Any = None
        #: RFC 7162 3.1: CONDSTORE is on for the rest of the session (ENABLE, SELECT (CONDSTORE)
        #: or a command using MODSEQ); every FETCH response with FLAGS then carries MODSEQ too
        self.condstore = False
        #: RFC 7162 3.2: ENABLE QRESYNC; expunges are then told as VANISHED uid-set
        self.qresync = False
        #: RFC 6855: ENABLE UTF8=ACCEPT; mailbox names are then UTF-8 both ways (``mailbox_wire``)
        self.utf8 = False
        #: RFC 9051: ENABLE IMAP4rev2; no \Recent, ESEARCH answers SEARCH, UTF-8 mailbox names
        self.rev2 = False
        #: the session holds a place under imap.max_preauth_connections_per_ip (until it logs in)
        self.preauth_slot = False
        self._limit_key: str | None = None
        now = asyncio.get_running_loop().time()
        #: loop time by which the client must have logged in (imap.preauth_timeout)
        self._login_deadline = now + ctx.config.imap.preauth_timeout
        rate = ctx.config.imap.max_commands_per_second
        self._pacer = Pacer(rate, ctx.config.imap.command_burst, now) if rate else None
        self._out: list[bytes] = []
        self._out_size = 0
        #: RFC 4978: the compressor of everything written after COMPRESS DEFLATE's OK, else None
        self._deflate = None
        self._deflating = False
        #: the running command may be answered with untagged EXPUNGE (its registration says)
        self._expunge_ok = False
        #: what ``run_looking`` found changed in the selected folder, for ``report_changes``
        self._looked: _Looked | None = None
        #: the silence watchdog (``_watch``): the session's task, its timer, the loop time by
        #: which the command being awaited must have come, whether one is being awaited, and
        #: whether the watchdog ended the wait
        self._task: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._read_deadline = 0.0
        self._reading = False
        self._silent = False
        #: ``frame_limits`` of the present state (they change only at login and UNAUTHENTICATE)
        self._limits: tuple | None = None

    # -- properties the handlers read ---------------------------------------------------------------
    @property
    def config(self):
        return self.ctx.config

    @property
    def store(self) -> "MailStore":
        """The mail store (``store.api``): every mailbox read and write of the session."""
        return self.ctx.mail

    async def heavy(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the heavy lane, as one of this user's jobs (``ServerContext.run_heavy``)."""
        return await self.ctx.run_heavy(self.account_id, fn, *args)

    @property
    def login_allowed(self) -> bool:
        """Plaintext AUTH only over TLS, or on loopback in development mode (LOGINDISABLED else)."""
        if self.tls_active:
            return True
        if not self.ctx.config.server.development:
            return False
        try:
            return ipaddress.ip_address(self.peer_ip).is_loopback
        except ValueError:
            return False

    def read_timeout(self) -> float:
        """Seconds the client may now stay silent: imap.idle_timeout, and before login no longer
        than what is left until the login deadline."""
        idle = float(self.config.imap.idle_timeout)
        if self.state == NOT_AUTH:
            return max(0.0, min(idle, self._login_deadline - asyncio.get_running_loop().time()))
        return idle

    def timeout_text(self) -> str:
        return R.BYE_LOGIN_TIMEOUT if self.state == NOT_AUTH else R.BYE_IDLE_TIMEOUT

    async def timed_out(self) -> NoReturn:
        """End the session for silence: BYE, then close (the BYE goes out as the session ends)."""
        await self.untagged(f"BYE {self.timeout_text()}")
        self.state = LOGOUT
        raise Closed()

    def authenticated(self, principal: "Principal", account_id: int) -> None:
        """LOGIN or AUTHENTICATE succeeded: the session leaves the pre-login limits (its place
        under the per-address cap, the small command bound, the login deadline)."""
        self.principal = principal
        self.account_id = account_id
        self.state = AUTH
        self.service.release_preauth(self)
        limit = self.config.imap.max_line_length + 2
        if isinstance(self.reader, asyncio.StreamReader):
            # the socket reader was made with the pre-login bound (service.start); asyncio has
            # no public way to change it
            self.reader._limit = limit  # type: ignore[attr-defined]

    def unauthenticated(self) -> None:
        """RFC 8437 UNAUTHENTICATE: back to the state after the greeting on the same connection
        (TLS and COMPRESS stay): no mailbox, no NOTIFY, nothing ENABLEd, the pre-login bounds
        and a new login deadline (the caller has taken a pre-login place: service.readmit_preauth)."""
        self.close_selected()
        self.stop_notify()
        self.wake = None
        self.principal = None
        self.account_id = 0
        self.state = NOT_AUTH
        self.condstore = self.qresync = self.utf8 = self.rev2 = False
        self._login_deadline = asyncio.get_running_loop().time() + self.config.imap.preauth_timeout
        if isinstance(self.reader, asyncio.StreamReader):
            imap = self.config.imap  # the bound service.start gives a new connection's reader
            self.reader._limit = min(imap.max_line_length, imap.max_preauth_command_size) + 2  # type: ignore

    def capability_text(self) -> str:
        return capabilities(self)

    def mailbox_wire(self, name: str) -> str:
        """``name`` as this session is sent it (modified UTF-7, or UTF-8 under UTF8=ACCEPT)."""
        return mailbox_wire(name, self.utf8)

    # -- writing ------------------------------------------------------------------------------------
    # A command's responses are gathered and written with one send: one system call per command
    # rather than one per line (it matters most for the many small replies of busy clients).
    async def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > _WRITE_HIGH_WATER:
            await self.flush()

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self._out_size = 0
            if self._deflate is not None:
                if len(data) > _DEFLATE_IN_THREAD:  # a large body: zlib works outside the GIL, off the loop
                    self._deflating = True  # meanwhile nothing else may use the stream (see wire)
                    try:
                        data = await self.ctx.run(deflate, self._deflate, data)
                    finally:
                        self._deflating = False
                else:
                    data = deflate(self._deflate, data)
            self.writer.write(data)
        await self.writer.drain()

    def wire(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire now (compressed after COMPRESS DEFLATE); nothing while
        a large flush is being compressed in a thread, whose bytes must go out first and whole."""
        if self._deflate is None:
            return data
        return b"" if self._deflating else deflate(self._deflate, data)

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    def start_compression(self) -> None:
        """RFC 4978: from now on both directions are raw DEFLATE (after the tagged OK went out)."""
        self._deflate = deflater()
        # the same limit as the socket's StreamReader (service.start)
        self.reader = InflatingReader(self.reader, self.config.imap.max_line_length + 2)

    async def untagged(self, text: str) -> None:
        await self.send(b"* " + text.encode("utf-8") + b"\r\n")

    async def continuation(self, text: str = R.CONT_READY) -> None:
        await self.send(b"+ " + text.encode() + b"\r\n")
        await self.flush()

    async def read_client_line(self, timeout: float | None = None) -> bytes:
        """One line (an AUTHENTICATE response, IDLE's DONE) without its CRLF; b"" if too long.
        After ``timeout`` seconds of silence the session ends (``timed_out``)."""
        try:
            line = await within(read_line(self.reader, self.frame_limits()[0]), timeout)
        except asyncio.TimeoutError:
            await self.timed_out()
        if line is None:
            return b""
        return line.rstrip(b"\r\n")

    def frame_limits(self) -> tuple[int, int, int]:
        """(line, literal, whole command) in bytes: before login, imap.max_preauth_command_size
        bounds all three (RFC 7888 4); after it, the line and literal limits and the larger of
        one literal and one MULTIAPPEND's messages, plus four lines."""
        limits = self._limits
        if limits is not None and (limits[3] == NOT_AUTH) == (self.state == NOT_AUTH):
            return limits[:3]
        imap = self.config.imap
        if self.state == NOT_AUTH:
            small = imap.max_preauth_command_size
            limits = (min(small, imap.max_line_length), min(small, imap.max_literal_size), small, NOT_AUTH)
        else:
            limits = (imap.max_line_length, imap.max_literal_size,
                      max(imap.max_literal_size, imap.max_multiappend_size) + imap.max_line_length * 4, AUTH)
        self._limits = limits
        return limits[:3]

    # -- the loop -------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.send(f"* OK [CAPABILITY {self.capability_text()}] {R.GREETING}\r\n".encode())
            while self.state != LOGOUT:
                await self.flush()
                framed = await self.next_command()
                if isinstance(framed, Refused):
                    if framed.fatal:
                        await self.untagged(f"BYE {R.BYE_LITERAL}")
                        break
                    reply = R.BAD_LINE_TOO_LONG if framed.reason == "line too long" else R.BAD_LITERAL_TOO_LARGE
                    await self.tagged(framed.tag, reply, INVALID)
                    continue
                if self._pacer is not None:
                    wait = self._pacer.delay(asyncio.get_running_loop().time())
                    if wait:
                        await self.flush()  # what is answered goes out before the pause
                        await asyncio.sleep(wait)
                await self.execute(framed)
        except (Closed, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._out:  # a last BYE; close() still sends what is buffered
                try:
                    self.writer.write(self.wire(b"".join(self._out)))
                except Exception:  # the transport is gone
                    pass
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self.close_selected()
            self.stop_notify()
            self.service.release(self)
            try:
                self.writer.close()
            except Exception:  # the transport may already be gone
                pass

    async def next_command(self):
        """The next command as framed; under NOTIFY, notifications go out while it is awaited
        (RFC 5465 4: the server may send them at any time between commands)."""
        line, literal, command = self.frame_limits()
        reading = read_command(self.reader, line, literal, self.continuation, command)
        loop = asyncio.get_running_loop()
        if self.notifier is None:
            # No task and no timer per command (asyncio.wait_for makes both): one watchdog per
            # session that ends the wait if it outlasts the deadline.
            self._read_deadline = loop.time() + self.read_timeout()
            if self._watchdog is None:
                self._task = asyncio.current_task()
                self._watchdog = loop.call_at(self._read_deadline, self._watch)
            self._reading = True
            try:
                return await reading
            except asyncio.CancelledError:
                if not self._silent:
                    raise
                self._silent = False
                self._task.uncancel()
                await self.timed_out()
            finally:
                self._reading = False
        deadline = loop.time() + self.read_timeout()
        task = asyncio.ensure_future(reading)
        waiter: asyncio.Future | None = None
        try:
            while True:
                wake = self.wake
                if self.notifier is None or wake is None:
                    done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
                    if not done:
                        await self.timed_out()
                    return task.result()
                waiter = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait({task, waiter}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                waiter = None
                if task in done:
                    return task.result()
                if not done:
                    await self.timed_out()
                wake.clear()
                try:
                    await self.push()
                except (Closed, ConnectionError):
                    raise
                except Exception as exc:  # the next command hears of it (NO [UNAVAILABLE]); keep reading
                    if is_outage(exc):
                        self.ctx.outage.failed("IMAP NOTIFY", exc)
                    else:
                        log.exception("IMAP NOTIFY failed")
                await self.flush()
        finally:
            for pending in (task, waiter):
                if pending is not None and not pending.done():
                    pending.cancel()

    def _watch(self) -> None:
        """The silence watchdog's timer: while a command is awaited past its deadline, end the
        wait (``next_command`` then says BYE); else look again at the deadline of the present
        wait, or when the next one begins."""
        self._watchdog = None
        if not self._reading or self._task is None or self._task.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._read_deadline:
            self._watchdog = loop.call_at(self._read_deadline, self._watch)
            return
        self._silent = True
        self._task.cancel()

    async def push(self, idle: bool = False) -> None:
        """Notifications owed now, outside any command: the selected folder's changes (in IDLE;
        under NOTIFY SELECTED also between commands, expunges held back under SELECTED-DELAYED),
        then NOTIFY's for the other folders."""
        n = self.notifier
        if self.selected is not None and (idle or (n is not None and n.pushes_selected)):
            await self.report_changes(allow_expunge=idle or not n.delayed,
                                      flags=idle or "FlagChange" in n.selected_events)
        if self.notifier is not None and self.notifier.pending():
            await self.notifier.report()

    def start_notify(self, notifier) -> None:
        self.notifier = notifier
        if self.wake is None:
            self.wake = asyncio.Event()

    def stop_notify(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
            self.notifier = None

    async def execute(self, framed: Framed) -> None:
        if framed.text_size > _PARSE_IN_THREAD:
            owner = self.account_id or ("address", self.peer_ip)
            spec, cmd = await self.ctx.run_heavy(owner, parse, framed.data, self.config.imap, self.utf8)
        else:
            spec, cmd = parse(framed.data, self.config.imap, self.utf8)
        if isinstance(cmd, Invalid):
            if cmd.reason in ("TOODEEP", "TOOMANYKEYS"):
                log.info("imap limit=%s client=%s account=%s", cmd.reason.lower(), self.peer_ip, self.account_id)
            await self.tagged(cmd.tag, _INVALID_REPLIES.get(cmd.reason, R.BAD_SYNTAX), INVALID)
            return
        if self.state not in spec.states:
            await self.tagged(cmd.tag, R.BAD_STATE, spec.name)
            return
        logout = False
        self._expunge_ok = spec.expunge
        self._looked = None
        try:
            reply = await spec.handler(self, cmd)
        except Logout:
            reply, logout = R.OK_DONE, True
        except AlreadyAnswered:
            self.ctx.metrics.imap_command(spec.name, "OK")
            return
        except (Closed, ConnectionError):
            raise  # the client went away: end the session quietly
        except CivicmailError as exc:
            reply = R.error_response(exc)
            if isinstance(exc, LimitExceeded):
                log.info("imap limit=folders client=%s account=%s command=%s", self.peer_ip, self.account_id, spec.name)
        except Exception as exc:
            if is_outage(exc):  # the database, not a bug: one line (a traceback once per outage)
                self.ctx.outage.failed(f"IMAP {spec.name}", exc)
                reply = R.NO_UNAVAILABLE
            else:
                log.exception("IMAP %s failed", spec.name)
                reply = R.NO_SERVER
        if self.selected is not None and not logout:
            await self.report_changes(allow_expunge=spec.expunge)
        if self.notifier is not None and not logout and self.notifier.pending():
            await self.notifier.report()
        if logout:
            await self.untagged(f"BYE {R.BYE_LOGOUT}")
            self.state = LOGOUT
        await self.tagged(cmd.tag, reply, spec.name)

    async def tagged(self, tag: str, reply: "R.Reply", command: str) -> None:
        """The tagged reply that ends a command, counted by command (a registered name or INVALID:
        never the client's text) and status."""
        self.ctx.metrics.imap_command(command, reply.status)
        await self.send(reply.tagged(tag))

    # -- the selected folder and other sessions' changes ------------------------------------------------
    def _on_change(self, folder_id: int) -> None:
        self.pending = True
        if self.wake is not None:
            self.wake.set()

    def select(self, selected: SelectedFolder, serial: int) -> None:
        """Listen to the selected folder. ``serial``: ``hub.serial()`` read before the snapshot
        ``selected`` was made from; a change announced since then (before this subscription,
        so told to no listener of ours) is looked at after the command."""
        self.close_selected()
        self.selected = selected
        self.state = SELECTED
        hub = self.ctx.hub
        hub.subscribe(selected.folder_id, self._on_change, asyncio.get_running_loop())
        if hub.announced_since(selected.folder_id, serial):
            self.pending = True

    def close_selected(self) -> None:
        if self.selected is not None:
            self.ctx.hub.unsubscribe(self.selected.folder_id, self._on_change, asyncio.get_running_loop())
            self.selected = None
            self.contexts.clear()
            if self.state == SELECTED:
                self.state = AUTH

    async def enable_condstore(self) -> None:
        """RFC 7162 3.1: a CONDSTORE enabling command (FETCH MODSEQ, STORE UNCHANGEDSINCE, SEARCH
        MODSEQ, STATUS HIGHESTMODSEQ, ENABLE CONDSTORE) turns it on for the session; the first one
        while a mailbox is selected is answered with its HIGHESTMODSEQ in an untagged OK."""
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            await self.untagged(R.OK_HIGHESTMODSEQ.with_code(f"HIGHESTMODSEQ {self.selected.modseq}").line())

    def keyword_limit(self) -> "R.Reply":
        """The reply to a STORE or APPEND past imap.max_keywords / max_keyword_length, logged."""
        log.info("imap limit=keywords client=%s account=%s", self.peer_ip, self.account_id)
        return R.NO_KEYWORD_LIMIT

    async def announce_keywords(self, keyword_texts: Iterable[str | None]) -> None:
        """RFC 3501 7.2.6: a keyword new to the selected folder is told in FLAGS (and
        PERMANENTFLAGS) before any FETCH response carries it; call before writing such responses."""
        sel = self.selected
        if sel is None:
            return
        new = sel.unknown_keywords(keyword_texts)
        if new:
            sel.keywords.update(new)
            for line in sel.flags_responses():
                await self.untagged(line)

    async def run_looking(self, fn: Callable[..., T], *args: Any, flags_only: bool = False,
                          expunges: bool = False, big: bool = False) -> T:
        """``ctx.run_write(fn, *args)`` for a command that writes: with a folder selected, the
        same job then looks at what changed in it after the COMMIT (``changes_since``), which
        ``report_changes`` would otherwise fetch in a second hop to a store thread. A result with ``modseq_before`` / ``modseq_after`` (``Stored``) is the
        session's own write, as ``_saw_own_write`` in handlers_message counts it. ``expunges``:
        the write removes messages (EXPUNGE), so the look looks for expunges (``force``).
        ``big``: several messages at once (``ServerContext.run_write``)."""
        sel = self.selected
        if sel is None:
            return await self.ctx.run_write(fn, *args, flags_only=flags_only, owner=self.account_id, big=big)
        force = expunges or (self._expunge_ok and sel.expunge_pending)
        quiet = None if self.pending else self.ctx.hub.version(sel.folder_id)
        view = sel.uids if expunges and not sel.expunge_pending else None
        look = functools.partial(_look_after, self.store, sel.account_id, sel.folder_id, sel.modseq, sel.max_uid,
                                 sel.exists, force, quiet, view)
        result, looked = await self.ctx.run_write(fn, *args, then=look, flags_only=flags_only,
                                                  owner=self.account_id, big=big)
        self._looked = _Looked(sel, *looked)
        return result

    async def report_changes(self, allow_expunge: bool, force: bool = False, flags: bool = True) -> None:
        """Send the EXISTS / RECENT / EXPUNGE / FETCH FLAGS owed to this client. ``flags=False``
        (NOTIFY SELECTED without FlagChange, between commands): a change of flags alone is left
        for the next command."""
        sel = self.selected
        looked, self._looked = self._looked, None
        if looked is not None and (looked.sel is not sel or looked.seen != (sel.modseq, sel.max_uid, sel.exists)
                                   or (allow_expunge and sel.expunge_pending and not looked.forced)):
            looked = None  # the view moved since (or expunges owed since): look again
        if looked is not None:
            # A change announced since the look began is looked at after the next command.
            self.pending = self.ctx.hub.version(sel.folder_id) != looked.version
            changes = looked.changes
            if changes is UNLOOKED:
                return
        else:
            if sel is None or not (self.pending or force or (allow_expunge and sel.expunge_pending)):
                return
            self.pending = False
            changes = await self.ctx.run_read(self.store.changes_since, sel.account_id, sel.folder_id, sel.modseq,
                                              sel.max_uid, sel.exists, allow_expunge and sel.expunge_pending)
            if self.selected is not sel:
                return
        if changes is None:
            await self.untagged(f"BYE {R.BYE_FOLDER_GONE}")
            self.state = LOGOUT
            raise Closed()
        if not flags and not changes.new and changes.present is None:
            self.pending = self.pending or bool(changes.changed)
            return
        known_max = sel.max_uid
        await self.announce_keywords(r[2] for r in changes.new + changes.changed)
        expunged, gone, new, changed = sel.apply(changes, allow_expunge)
        if gone and self.contexts:
            # RFC 5267 4.3: an updated search's REMOVEFROM for expunged messages comes before the
            # EXPUNGE (or VANISHED) that removes them, while the client still knows them.
            for line in contexts_expunged(self.contexts.values(), gone):
                await self.untagged(line)
        if gone and self.qresync:
            # RFC 7162 3.2.10: one VANISHED for all of them instead of an EXPUNGE each
            await self.untagged("VANISHED " + format_uid_set(gone))
        else:
            for seq in expunged:
                await self.untagged(f"{seq} EXPUNGE")
        if new:
            if sel.readonly:  # EXAMINE: \Recent as no session has claimed them, without claiming
                sel.note_recent(max(changes.recent_uid, known_max), new[-1])
            elif not sel.rev2 and not all(sel.is_recent(u) for u in new):
                before = await self.ctx.run_write(self.store.claim_recent, sel.folder_id, new[-1], flags_only=True,
                                                  owner=self.account_id)
                sel.note_recent(max(before, known_max), new[-1])
            await self.untagged(f"{sel.exists} EXISTS")
            if not sel.rev2:  # RFC 9051 E.6: no RECENT response
                await self.untagged(f"{sel.recent_count()} RECENT")
            if self.notifier is not None:
                await self.notifier.fetch_new(new)
        for uid, flags, keywords, modseq in changed:
            seq = sel.seq_of(uid)
            if seq is not None:
                tail = f" MODSEQ ({modseq})" if self.condstore else ""
                flags_text = flag_text(flags, keywords, sel.is_recent(uid))
                await self.untagged(f"{seq} FETCH (UID {uid} FLAGS {flags_text}{tail})")
        if self.contexts and (new or changed):
            await self.update_contexts(sel, sorted({*new, *(c[0] for c in changed)}))

    async def update_contexts(self, sel: SelectedFolder, touched: list[int]) -> None:
        """RFC 5267 4.3: tell each updated search what the new or re-flagged (``touched``)
        messages do to its result (after the EXISTS that announces new ones); only those are
        searched again, on the heavy lane."""
        touched = [u for u in touched if sel.seq_of(u) is not None]
        if not touched:
            return
        for ctx in list(self.contexts.values()):
            matched = await self.heavy(matching, self.store, sel, ctx.keys, touched)
            if self.selected is not sel:
                return
            if ctx.criteria is None:
                for line in update_lines(ctx, [], touched, matched):
                    await self.untagged(line)
                continue
            head = f'ESEARCH (TAG "{ctx.tag}") UID'
            removed = removals(ctx, [], touched, matched)
            if removed:
                await self.untagged(f"{head} REMOVEFROM ({removed})")
            if matched - ctx.uids:
                order = await self.heavy(sorted_uids, self.store, sel, ctx.criteria, ctx.keys)
                if self.selected is not sel:
                    return
                added = additions(ctx, order)
                if added:
                    await self.untagged(f"{head} ADDTO ({added})")

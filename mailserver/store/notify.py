"""Mailbox change notices between sessions of one process (and, on PostgreSQL, between nodes).

Each ``Store`` has one hub (``store.hub``), shared by every writer and session over it. Writers
call ``changed(folder_ids)`` after their transaction commits; IMAP sessions subscribe to
the folder they have selected (and, under NOTIFY, to the folders they watch). A change to an
account's list of folders or of subscriptions (CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE) is
told with ``account_changed(account_ids)`` to the account's listeners. Safe to call from any thread.

On PostgreSQL the hub also knows which NOTIFY channels this node needs (``channel_interest``):
a folder or account gains a channel when its first listener comes and loses it with its last,
and the node's LISTEN thread (``pglisten.ChannelListener``) follows.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import Counter, defaultdict
from typing import Callable, Iterable, Iterator

Listener = Callable[[int], None]
#: a listener and the loop it is called on (None: in the writer's thread)
Entry = tuple[asyncio.AbstractEventLoop | None, Listener]
#: folders share this many slots of ``ChangeHub.announced_since`` (a shared slot costs a spurious look only)
_SLOTS = 4096
#: NOTIFY channels of each kind: a folder's is ``civicmail_f<id mod CHANNELS>``, an account's
#: ``civicmail_a<id mod CHANNELS>``. Fixed: every node of a cluster must hash alike.
CHANNELS = 1024
assert _SLOTS % CHANNELS == 0  # a channel's folders fill whole slots: see ChangeHub.wake_channel
FOLDER_CHANNEL, ACCOUNT_CHANNEL = "civicmail_f", "civicmail_a"


def folder_channel(folder_id: int) -> str:
    return f"{FOLDER_CHANNEL}{folder_id % CHANNELS}"


def account_channel(account_id: int) -> str:
    return f"{ACCOUNT_CHANNEL}{account_id % CHANNELS}"


class ChangeHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, set[Entry]] = defaultdict(set)
        #: listeners of accounts' folder and subscription lists, by account id
        self._accounts: dict[int, set[Entry]] = defaultdict(set)
        #: how many times each watched folder was announced changed (kept while it has listeners)
        self._versions: dict[int, int] = {}
        #: announcements of any folder so far, and the count at the last one in each slot of
        #: folder ids (listened to or not): see ``serial`` and ``announced_since``
        self._serial = 0
        self._last = [0] * _SLOTS
        #: ``held``: the changes a thread announces inside it (each folder with how many times),
        #: announced when it ends
        self._local = threading.local()
        #: channel -> the folders (or accounts) listened to here that it carries: the channel's
        #: reference count is the set's size
        self._channels: dict[str, set[int]] = {}
        #: channels whose count went to or from zero since the LISTEN thread last looked
        self._dirty: set[str] = set()
        #: called (without the lock) when a channel became dirty: wakes the LISTEN thread
        self.on_interest: Callable[[], None] | None = None

    def subscribe(self, folder_id: int, listener: Listener, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._add(self._listeners, folder_id, (loop, listener))

    def unsubscribe(self, folder_id: int, listener: Listener, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._remove(self._listeners, folder_id, (loop, listener))

    def subscribe_account(self, account_id: int, listener: Listener,
                          loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._add(self._accounts, account_id, (loop, listener))

    def unsubscribe_account(self, account_id: int, listener: Listener,
                            loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._remove(self._accounts, account_id, (loop, listener))

    def _add(self, table: dict[int, set[Entry]], key: int, entry: Entry) -> None:
        with self._lock:
            first = key not in table
            table[key].add(entry)
            woke = first and self._count(table, key, +1)
        if woke and self.on_interest is not None:
            self.on_interest()

    def _remove(self, table: dict[int, set[Entry]], key: int, entry: Entry) -> None:
        woke = False
        with self._lock:
            entries = table.get(key)
            if entries:
                entries.discard(entry)
                if not entries:
                    del table[key]
                    if table is self._listeners:
                        self._versions.pop(key, None)
                    woke = self._count(table, key, -1)
        if woke and self.on_interest is not None:
            self.on_interest()

    def _count(self, table: dict[int, set[Entry]], key: int, step: int) -> bool:
        """Under the lock: one more (or fewer) key listened to on its channel; whether the
        channel went from or to zero (then the LISTEN thread has something to do)."""
        channel = folder_channel(key) if table is self._listeners else account_channel(key)
        keys = self._channels.setdefault(channel, set())
        if step > 0:
            keys.add(key)
        else:
            keys.discard(key)
        if len(keys) == (1 if step > 0 else 0):
            if not keys:
                del self._channels[channel]
            self._dirty.add(channel)
            return True
        return False

    # -- the LISTEN thread's side (PostgreSQL) -----------------------------------------------------
    def channel_interest(self) -> dict[str, bool]:
        """The channels whose count went to or from zero since the last call, each with whether
        it is wanted now (LISTEN) or not (UNLISTEN)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return {channel: channel in self._channels for channel in dirty}

    def channels(self) -> set[str]:
        """Every channel some listener here needs; marks none dirty (the thread LISTENs to them all)."""
        with self._lock:
            self._dirty.clear()
            return set(self._channels)

    def wake_channel(self, channel: str) -> None:
        """The LISTEN on ``channel`` took effect: what was committed before it was never heard
        here, so every listener of the channel looks once, and so does a session that read
        ``serial()`` before its look and subscribes later (``announced_since`` says yes for every
        folder of the channel). The lost-wake-up rule of a watcher registered after the LISTEN."""
        with self._lock:
            keys = set(self._channels.get(channel, ()))
        if channel.startswith(ACCOUNT_CHANNEL):
            self.account_changed(keys)
            return
        self._announce(dict.fromkeys(keys, 1), range(int(channel[len(FOLDER_CHANNEL):]), _SLOTS, CHANNELS))

    def wake_all(self) -> None:
        """The LISTEN connection was (re)made: anything may have been missed, so every listener
        looks once and every folder counts as announced."""
        with self._lock:
            folders, accounts = set(self._listeners), set(self._accounts)
        self._announce(dict.fromkeys(folders, 1), range(_SLOTS))
        self.account_changed(accounts)

    def account_changed(self, account_ids: Iterable[int]) -> None:
        """The folder or subscription list of these accounts changed (after the commit)."""
        _call(self._targets(self._accounts, account_ids))

    def watched(self) -> set[int]:
        """Folder ids some listener waits on."""
        with self._lock:
            return set(self._listeners)

    def version(self, folder_id: int) -> int:
        """How many changes of a watched folder were announced so far. Read before looking at
        the folder: an equal version afterwards means no change was announced since the look
        began (a change committed before the look may be counted later, never the reverse,
        since writers announce after their commit)."""
        return self._versions.get(folder_id, 0)

    def serial(self) -> int:
        """Announcements of any folder so far. Read it before looking at a folder that is not
        yet listened to (SELECT's snapshot), then subscribe, then ask ``announced_since``: a
        change announced between the look and the subscription reaches no listener, and would
        otherwise be lost (the next one alone would wake the session)."""
        return self._serial

    def announced_since(self, folder_id: int, serial: int) -> bool:
        """Whether a change of the folder may have been announced after ``serial`` (``serial()``
        read before the look). Never a false no; a false yes (another folder of the same slot)
        costs one look."""
        return self._last[folder_id % _SLOTS] > serial

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Changes announced by this thread inside the block are announced when it ends without
        an error (after the COMMIT of the write lane's batch, which the block encloses), and
        dropped if it raises (nothing was committed). A folder's ``version`` still moves once
        for each writer that announced it: a session that wrote in the batch tells its own
        change from another's by the count (imap/session.py ``_look_after``)."""
        held: Counter[int] = Counter()
        self._local.held = held
        try:
            yield
        finally:
            self._local.held = None
        if held:
            self._announce(held, ())

    def changed(self, folder_ids: Iterable[int]) -> None:
        held = getattr(self._local, "held", None)
        if held is not None:
            held.update(set(folder_ids))
            return
        self._announce(dict.fromkeys(folder_ids, 1), ())

    def _announce(self, folder_ids: dict[int, int], slots: Iterable[int]) -> None:
        """``folder_ids`` changed (each by this many writers: its version moves by as much);
        the folders of ``slots`` count as announced too."""
        with self._lock:
            self._serial += 1
            for slot in slots:
                self._last[slot] = self._serial
            targets = []
            for fid, times in folder_ids.items():
                self._last[fid % _SLOTS] = self._serial
                entries = self._listeners.get(fid)
                if entries:
                    self._versions[fid] = self._versions.get(fid, 0) + times
                    targets.extend((fid, entry) for entry in entries)
        _call(targets)

    def _targets(self, table: dict[int, set[Entry]], keys: Iterable[int]) -> list[tuple[int, Entry]]:
        with self._lock:
            return [(k, entry) for k in set(keys) for entry in table.get(k, ())]


def _call(targets: list[tuple[int, Entry]]) -> None:
    for key, (loop, listener) in targets:
        if loop is None:
            listener(key)
        else:
            try:
                loop.call_soon_threadsafe(listener, key)
            except RuntimeError:  # that loop has closed
                pass


#: ``session.info`` key of the folders (ids) and accounts ("a" ids) the transaction changed
_PENDING = "civicmail_announce"
#: ids a NOTIFY payload carries at most (payloads stay under PostgreSQL's 8,000 bytes)
_PAYLOAD_IDS = 500


def announce(session, folder_ids: Iterable[int], prefix: str = "") -> None:
    """On PostgreSQL, tell the other nodes of changed folders when the writer's transaction
    commits: the ids are gathered on the session and sent just before the COMMIT
    (``send_announcements``; delivered at COMMIT, never for a rolled-back write), however many
    writes the transaction made. A no-op on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.info.setdefault(_PENDING, set()).update(prefix + str(x) for x in folder_ids)


def notifications(items: Iterable[str]) -> list[tuple[str, str]]:
    """(channel, payload) for announced items ("12" a folder, "a7" an account): one per channel
    the items hash to (one per 500 ids of a channel), the payload the channel's ids "id,id,...",
    account ids written "a<id>" (so ``parse_payload`` reads any payload)."""
    by_channel: dict[str, list[str]] = defaultdict(list)
    for item in items:
        channel = account_channel(int(item[1:])) if item[:1] == "a" else folder_channel(int(item))
        by_channel[channel].append(item)
    out = []
    for channel, ids in sorted(by_channel.items()):
        ids.sort()
        out += [(channel, ",".join(ids[i:i + _PAYLOAD_IDS])) for i in range(0, len(ids), _PAYLOAD_IDS)]
    return out


#: every notification of a commit in one statement: the channels and the payloads of
#: ``notifications`` as two arrays, each placeholder filled as the caller's driver wants it
NOTIFY_SQL = "SELECT pg_notify(c, p) FROM unnest(CAST({} AS text[]), CAST({} AS text[])) AS n(c, p)"


def notify_arrays(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """``notifications`` of announced items as NOTIFY_SQL's two arrays: channels, payloads."""
    pairs = notifications(items)
    return [c for c, _ in pairs], [p for _, p in pairs]


def send_announcements(session) -> None:
    """The transaction's announcements, one ``pg_notify`` per channel touched (``notifications``),
    all in one statement, in the transaction. Run before every COMMIT of a session (the event
    below); ``Store.commit_before``, which sends its COMMIT itself, calls it first."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    from sqlalchemy import text

    channels, payloads = notify_arrays(pending)
    session.execute(text(NOTIFY_SQL.format(":channels", ":payloads")), {"channels": channels, "payloads": payloads})


def announcements_sql(session) -> str:
    """``send_announcements`` as SQL text to send with the COMMIT in one simple query (one
    round trip less a write: ``Store.session``, ``Store.commit_before``): the ``pg_notify``
    statements, each ended by "; ", taken off the session; "" if it has none. The payloads are
    literals, made only of what ``announce`` puts there (digits, "a", commas), one statement
    for every channel touched (``notifications``)."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return ""
    if not all(_ITEM.match(x) for x in pending):
        raise ValueError(f"announcements must be ids: {sorted(pending)[:5]!r}")
    channels, payloads = notify_arrays(pending)
    # array literals: channel names and payloads need no escaping
    return NOTIFY_SQL.format("'{" + ",".join(channels) + "}'", "'{" + ",".join(f'"{p}"' for p in payloads) + "}'") + "; "


_ITEM = re.compile(r"a?[0-9]+\Z")


def _forget_announcements(session, *_args) -> None:
    session.info.pop(_PENDING, None)


def _listen_to_sessions() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    event.listen(Session, "before_commit", send_announcements)
    event.listen(Session, "after_rollback", _forget_announcements)


_listen_to_sessions()


def announce_account(session, account_id: int) -> None:
    """``announce`` for a change of the account's folder or subscription list."""
    announce(session, [account_id], prefix="a")


def parse_payload(payload: str) -> tuple[list[int], list[int]]:
    """A NOTIFY payload to (folder ids, account ids); anything else in it is ignored."""
    folders, accounts = [], []
    for item in payload.split(","):
        if item.isdigit():
            folders.append(int(item))
        elif item[:1] == "a" and item[1:].isdigit():
            accounts.append(int(item[1:]))
    return folders, accounts


class FolderWatcher:
    """Turns writes made by OTHER processes (the pipeline, another node) into ``hub.changed``.

    One cheap poll per process, not per session: every ``interval`` seconds it reads the
    HIGHESTMODSEQ of the folders some session here watches, and notifies those that moved.
    On SQLite it first asks ``PRAGMA data_version`` (changes only when another connection
    committed), so an idle server costs one pragma per poll.
    """

    def __init__(self, store, hub: ChangeHub, executor=None, interval: float = 0.25, outage=None) -> None:
        from .outage import OutageLog

        self.store = store
        self.hub = hub
        #: the process's OutageLog: a failing poll is one line there (a traceback once per outage)
        self.outage = outage or OutageLog()
        self.executor = executor
        self.interval = interval
        self._conn = None
        #: held by a poll and by the close in stop(): cancelling the watcher task does not stop a
        #: poll already running in a thread, and closing a sqlite3 connection while another thread
        #: runs a statement on it crashes the process (SIGSEGV at shutdown)
        self._conn_lock = threading.Lock()
        self._closed = False
        self._data_version: int | None = None
        self._seen: dict[int, int] = {}
        self._task: asyncio.Task | None = None
        #: PostgreSQL: the LISTEN thread (pglisten.ChannelListener), while started
        self.listener = None

    def start(self) -> None:
        if self.store.dialect == "postgresql":
            from .pglisten import ChannelListener

            # LISTEN/NOTIFY tells us at once; the poll stays as a slow safety net.
            self.interval = 30.0
            self.listener = ChannelListener(self.store, self.hub)
            self.listener.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.listener is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.listener.stop)
            self.listener = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # its end; a cancel of this stop still reaches the caller
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self.executor, self._close)

    def _close(self) -> None:
        """Close the watcher's connection once no poll is using it (blocking)."""
        with self._conn_lock:
            conn, self._conn = self._conn, None
            self._closed = True
            if conn is not None:
                conn.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                changed = await loop.run_in_executor(self.executor, self.poll)
            except Exception as exc:  # a failed poll (database restarting) is retried on the next tick
                self.outage.failed("folder watcher", exc)
                with self._conn_lock:
                    self._conn = None
                continue
            self.outage.succeeded()
            if changed:
                self.hub.changed(changed)

    def _rows(self, sql: str, params: list) -> list[tuple]:
        """One read on the watcher's own connection ("?" placeholders). On SQLite that is a
        plain sqlite3 connection outside the engine's pool, which the sessions need."""
        if self._conn is None:
            if self.store.dialect == "sqlite":
                import sqlite3

                self._conn = sqlite3.connect(self.store.engine.url.database, check_same_thread=False,
                                             isolation_level=None)
            else:
                self._conn = self.store.engine.connect().execution_options(civicmail_readonly=True)
        if self.store.dialect == "sqlite":
            return self._conn.execute(sql, params).fetchall()
        try:
            return list(self._conn.exec_driver_sql(sql.replace("?", "%s"), tuple(params)).all())
        finally:
            self._conn.rollback()

    def poll(self) -> list[int]:
        """Folder ids whose HIGHESTMODSEQ moved since the last poll (blocking)."""
        with self._conn_lock:
            return [] if self._closed else self._poll()

    def _poll(self) -> list[int]:
        watched = self.hub.watched()
        if self.store.dialect == "sqlite":
            version = self._rows("PRAGMA data_version", [])[0][0]
            unchanged = version == self._data_version
            self._data_version = version
            if unchanged:
                self._seen = {f: m for f, m in self._seen.items() if f in watched}
                if all(f in self._seen for f in watched):
                    return []
        current: dict[int, int] = {}
        ids = sorted(watched)
        for i in range(0, len(ids), 900):
            chunk = ids[i:i + 900]
            current.update(self._rows(f"SELECT id, highestmodseq FROM folder WHERE id IN ({','.join('?' * len(chunk))})",
                                      chunk))
        changed = [fid for fid in watched if self._seen.get(fid) != current.get(fid)]
        self._seen = current
        return changed

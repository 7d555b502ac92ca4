"""Mailbox change notices between sessions of one process (and, on PostgreSQL, between nodes).

Each ``Store`` has one hub (``store.hub``), shared by every writer and session over it. Writers
call ``changed(folder_ids)`` after their transaction commits; IMAP sessions subscribe to
the folder they have selected (and, under NOTIFY, to the folders they watch). A change to an
account's list of folders or of subscriptions (CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE) is
told with ``account_changed(account_ids)`` to the account's listeners. Safe to call from any thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import defaultdict
from typing import Callable, Iterable, Iterator

Listener = Callable[[int], None]
#: a listener and the loop it is called on (None: in the writer's thread)
Entry = tuple[asyncio.AbstractEventLoop | None, Listener]
#: folders share this many slots of ``ChangeHub.announced_since`` (a shared slot costs a spurious look only)
_SLOTS = 4096


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
        #: ``held``: the changes a thread announces inside it, announced when it ends
        self._local = threading.local()

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
            table[key].add(entry)

    def _remove(self, table: dict[int, set[Entry]], key: int, entry: Entry) -> None:
        with self._lock:
            entries = table.get(key)
            if entries:
                entries.discard(entry)
                if not entries:
                    del table[key]
                    if table is self._listeners:
                        self._versions.pop(key, None)

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
        dropped if it raises (nothing was committed)."""
        held: set[int] = set()
        self._local.held = held
        try:
            yield
        finally:
            self._local.held = None
        if held:
            self.changed(held)

    def changed(self, folder_ids: Iterable[int]) -> None:
        held = getattr(self._local, "held", None)
        if held is not None:
            held.update(folder_ids)
            return
        with self._lock:
            self._serial += 1
            targets = []
            for fid in set(folder_ids):
                self._last[fid % _SLOTS] = self._serial
                entries = self._listeners.get(fid)
                if entries:
                    self._versions[fid] = self._versions.get(fid, 0) + 1
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


#: PostgreSQL channel on which writers announce changed folders (payload: "id,id,...") and
#: changed folder lists of accounts (an id written "a<account id>")
CHANNEL = "civicmail_folders"


#: ``session.info`` key of the folders (ids) and accounts ("a" ids) the transaction changed
_PENDING = "civicmail_announce"
#: ids a NOTIFY payload carries at most (payloads stay under PostgreSQL's 8,000 bytes)
_PAYLOAD_IDS = 500


def announce(session, folder_ids: Iterable[int], prefix: str = "") -> None:
    """On PostgreSQL, tell the other nodes of changed folders when the writer's transaction
    commits: the ids are gathered on the session and sent as one ``pg_notify`` just before the
    COMMIT (``send_announcements``; delivered at COMMIT, never for a rolled-back write), however
    many writes the transaction made. A no-op on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.info.setdefault(_PENDING, set()).update(prefix + str(x) for x in folder_ids)


def send_announcements(session) -> None:
    """The transaction's announcements as one ``pg_notify`` (one per 500 ids), in the transaction.
    Run before every COMMIT of a session (the event below); ``Store.commit_before``, which sends
    its COMMIT itself, calls it first."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    from sqlalchemy import text

    items = sorted(pending)
    for i in range(0, len(items), _PAYLOAD_IDS):
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": ",".join(items[i:i + _PAYLOAD_IDS])})


def announcements_sql(session) -> str:
    """``send_announcements`` as SQL text to send with the COMMIT in one simple query (one
    round trip less a write: ``Store.session``, ``Store.commit_before``): the ``pg_notify``
    statements, each ended by "; ", taken off the session; "" if it has none. The payloads are
    literals, made only of what ``announce`` puts there (digits, "a", commas)."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return ""
    items = sorted(pending)
    if not all(_ITEM.match(x) for x in items):
        raise ValueError(f"announcements must be ids: {items[:5]!r}")
    return "".join(f"SELECT pg_notify('{CHANNEL}', '{','.join(items[i:i + _PAYLOAD_IDS])}'); "
                   for i in range(0, len(items), _PAYLOAD_IDS))


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
        self._listener: threading.Thread | None = None
        self._listening = False

    def start(self) -> None:
        if self.store.dialect == "postgresql":
            # LISTEN/NOTIFY tells us at once; the poll stays as a slow safety net.
            self.interval = 30.0
            self._listener = threading.Thread(target=self._listen, name="folder-listen", daemon=True)
            self._listening = True
            self._listener.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _listen(self) -> None:
        """PostgreSQL: a dedicated connection LISTENs and hands every NOTIFY to the hub."""
        import logging
        import time

        from .outage import describe

        while self._listening:
            try:
                # direct to the database, not through a transaction-mode pooler (store.listen_url)
                with self.store.listen_connection() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while self._listening:
                        for note in conn.notifies(timeout=1.0):
                            ids, accounts = parse_payload(note.payload)
                            if ids:
                                self.hub.changed(ids)
                            if accounts:
                                self.hub.account_changed(accounts)
            except Exception as exc:  # the database restarted: reconnect after a pause
                logging.getLogger("civicmail.notify").warning("LISTEN connection lost: %s", describe(exc))
                time.sleep(1.0)

    async def stop(self) -> None:
        self._listening = False
        if self._listener is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self._listener.join, 5)
            self._listener = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
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

"""Group commit for SQLite: many small IMAP writes (STORE, APPEND, EXPUNGE...) share one COMMIT.

A commit with ``synchronous=FULL`` costs an fsync (~4-8 ms here) and SQLite takes one writer
at a time, so one transaction per command caps a process at a few hundred writes a second.
Instead, threads that want to write queue on one mutex; each runs its work in a SAVEPOINT of
a transaction shared with the threads queued beside it, and the last of a burst commits for
all of them. Nobody returns before the COMMIT that holds its work: durability is unchanged
("acknowledged means durable"), only fsyncs are shared. A failure inside one thread's work
rolls back its savepoint only; a failed COMMIT fails every thread of the batch.

A batch of writes that need not be on disk when acknowledged (``batch(durable=False)``: IMAP
flag changes unless imap.fsync_flag_changes) runs on a connection set to ``synchronous=NORMAL``
(SQLite takes the level only outside a transaction), so its COMMIT makes no fsync: in WAL mode
it survives a crash of the process, and a power loss keeps it or loses it with every later
commit (never a part of one); the next fsynced COMMIT (an APPEND, EXPUNGE, delivery) puts it on
disk with everything before it in the WAL. The level is set back before the connection returns
to the pool.
"""
from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from typing import Any, Callable, Iterator

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..errors import StorageError


_SAVEPOINT = "civicmail_write"

#: ``Session.info`` key: (qmark, DBAPI connection) of a session whose transaction is open on one
#: connection until the session ends (the group commit's: ``pin_dbapi``); ``driver._cursor`` then takes
#: them from there instead of asking SQLAlchemy for its connection at every statement
PINNED_DBAPI = "civicmail_pinned_dbapi"


def session_dbapi(session: Session) -> tuple[bool, Any]:
    """(qmark, DBAPI connection) of ``session``'s transaction (begun if it was not): whether its
    driver takes "?" placeholders (SQLite), and the connection."""
    conn = session.connection()
    return conn.dialect.paramstyle == "qmark", conn.connection.dbapi_connection


def pin_dbapi(session: Session):
    """The DBAPI connection of ``session``'s transaction (begun if it was not), kept in the
    session for ``driver._cursor``. Only for a session closed when its one transaction ends."""
    pinned = session.info.get(PINNED_DBAPI)
    if pinned is None:
        pinned = session.info[PINNED_DBAPI] = session_dbapi(session)
    return pinned[1]


class _Batch:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise StorageError("the write could not be committed") from self.error


class GroupCommit:
    def __init__(self, store) -> None:
        self.store = store
        self._mutex = threading.Lock()
        self._count_lock = threading.Lock()
        self._queued = 0
        self._session: Session | None = None
        self._cm = None
        self._batch: _Batch | None = None
        #: told the seconds of each COMMIT (the server's metrics), in the committing thread
        self.on_commit: Callable[[float], None] | None = None
        #: the same for each COMMIT made without an fsync (``batch(durable=False)``)
        self.on_unsynced_commit: Callable[[float], None] | None = None
        #: the open transaction's level was lowered (no fsync at its COMMIT)
        self._unsynced = False
        #: set in a thread inside ``batch``
        self._local = threading.local()
        #: the pooled connection the last batch committed on, kept for the next (``_transaction``)
        self._held = None
        #: that connection's synchronous level as the pool gave it, and its level now (an
        #: unsynced batch left it lowered: the next durable batch raises it, and it goes back to
        #: the pool raised); None: at the pool's level, not read
        self._held_levels: list[int] | None = None

    def _acquire(self) -> None:
        with self._count_lock:
            self._queued += 1
        self._mutex.acquire()
        with self._count_lock:
            self._queued -= 1

    def _open(self, durable: bool = True) -> tuple[Session, _Batch]:
        if self._session is None:
            unsynced: list[bool] = []
            self._cm = _transaction(self, durable, unsynced)
            self._session = self._cm.__enter__()
            self._unsynced = bool(unsynced)
            self._batch = _Batch()
        return self._session, self._batch  # type: ignore[return-value]

    def _commit(self) -> None:
        """Commit the open batch (mutex held) and wake its threads."""
        cm, batch, unsynced = self._cm, self._batch, self._unsynced
        self._session = self._cm = self._batch = None
        started = time.monotonic()
        try:
            cm.__exit__(None, None, None)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            batch.error = exc
        else:
            report = self.on_unsynced_commit if unsynced else self.on_commit
            if report is not None:
                report(time.monotonic() - started)
        batch.done.set()

    def _leave(self) -> None:
        """Release the mutex; commit first unless another writer is queued to join the batch."""
        try:
            with self._count_lock:
                others = self._queued
            if not others and self._session is not None:
                self._commit()
        finally:
            self._mutex.release()

    @contextlib.contextmanager
    def batch(self, durable: bool = True) -> Iterator[None]:
        """One thread's writes in one transaction (the IMAP write lane): inside the block,
        ``write`` neither commits nor waits; the block's end commits them all, or raises
        StorageError if that COMMIT fails. Other writers wait for the whole block.
        ``durable=False``: unless it joins a transaction already open, its COMMIT is not
        fsynced (the module's docstring)."""
        self._acquire()
        self._local.batching = durable
        try:
            yield
            if self._session is not None:
                batch = self._batch
                self._commit()
                if batch.error is not None:
                    raise StorageError("the write could not be committed") from batch.error
        except BaseException:
            if self._session is not None:  # not committed: roll the open transaction back
                cm, self._session, self._cm, self._batch = self._cm, None, None, None
                cm.__exit__(*sys.exc_info())
            raise
        finally:
            self._local.batching = None
            self._mutex.release()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        batching = getattr(self._local, "batching", None)
        if batching is not None:
            with self._savepoint(self._open(batching)[0]) as session:
                yield session
            return
        self._acquire()
        try:
            session, batch = self._open()
            with self._savepoint(session):
                yield session
        finally:
            self._leave()
        batch.wait()

    @staticmethod
    @contextlib.contextmanager
    def _savepoint(session: Session) -> Iterator[Session]:
        # The savepoint through the driver: SQLAlchemy's begin_nested() cost more than the
        # statements of a small write, and every writer of the process waits meanwhile. The
        # blocks run Core and driver statements only (no ORM objects to expire on rollback).
        dbapi = pin_dbapi(session)  # the batch's session ends with its transaction (_commit)
        dbapi.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield session
        except BaseException:
            dbapi.execute(f"ROLLBACK TO {_SAVEPOINT}")
            dbapi.execute(f"RELEASE {_SAVEPOINT}")
            raise
        dbapi.execute(f"RELEASE {_SAVEPOINT}")

    def close(self) -> None:
        """Give the connection kept between batches back to the pool (``Store.dispose``)."""
        held, self._held = self._held, None
        levels, self._held_levels = self._held_levels, None
        if held is not None:
            try:
                _restore_level(held.driver_connection, levels)
            except BaseException:
                held.invalidate()  # never back into the pool with its level lowered
                raise
            held.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """For a writer with its own transaction (another module's): commit any open batch,
        then hold the mutex while it runs."""
        self._acquire()
        try:
            if self._session is not None:
                self._commit()
            yield
        finally:
            self._mutex.release()


@contextlib.contextmanager
def _transaction(commits: GroupCommit, durable: bool, unsynced: list[bool]) -> Iterator[Session]:
    """The batch's transaction: BEGIN IMMEDIATE and COMMIT sent through the driver on a pooled
    connection, and a session over that connection for the writers (its ``info`` pins the
    connection for ``driver._cursor``). SQLAlchemy's own session transaction (its Connection's
    checkout, the session's begin and commit state machine, the checkin) cost several times
    the statements of a small write, in the thread every writer of the process waits on
    (docs/benchmarks.md, branch ``loopcost``). A writer that runs a statement through the
    session itself makes SQLAlchemy begin there too; db.py's BEGIN then finds the transaction
    open and leaves it, and the COMMIT goes through the session (its flush and hooks).

    The connection of a batch that committed is kept for the next one (``commits._held``, the
    batches run one at a time under the group commit's mutex): the pool's checkin and checkout
    were the next largest cost. After any failure it goes back to the pool, which rolls it back.

    ``durable=False`` sets the connection to ``synchronous=NORMAL`` before BEGIN (appending True
    to ``unsynced``); where the level is NORMAL or OFF already, nothing changes. A durable batch
    sets it back to the pool's level before its BEGIN, and so does the connection's return to
    the pool (``_restore_level``): a kept connection is not set back after every unsynced batch,
    which in a run of flag changes cost two statements a batch (the level is read once a
    connection, ``commits._held_levels``). A failed BEGIN or COMMIT raises SQLAlchemy's wrapper of the driver's error
    (an OperationalError for "database is locked" or a disk error), as its own path did."""
    store = commits.store
    fairy, commits._held = commits._held, None
    levels, commits._held_levels = commits._held_levels, None
    if fairy is None:
        fairy = store.engine.raw_connection()
        levels = None
    dbapi = fairy.driver_connection
    keep = False
    try:
        if durable:
            if levels is not None and levels[1] != levels[0]:
                dbapi.execute(f"PRAGMA synchronous={int(levels[0])}")
                levels[1] = levels[0]
        else:
            if levels is None:
                level = dbapi.execute("PRAGMA synchronous").fetchone()[0]
                levels = [level, level]
            if levels[0] > 1:
                if levels[1] != 1:
                    dbapi.execute("PRAGMA synchronous=NORMAL")
                    levels[1] = 1
                unsynced.append(True)
        session = store.sessions(bind=Connection(store.engine, fairy))
        session.info[PINNED_DBAPI] = (True, dbapi)
        sqlite_execute(dbapi, "BEGIN IMMEDIATE")
        try:
            yield session
        except BaseException:
            try:
                if session.in_transaction():
                    session.rollback()
            finally:
                if dbapi.in_transaction:
                    dbapi.execute("ROLLBACK")
            raise
        if session.in_transaction():
            session.commit()
        if dbapi.in_transaction:
            sqlite_execute(dbapi, "COMMIT")
        keep = True
    finally:
        if keep and not dbapi.in_transaction:
            commits._held, commits._held_levels = fairy, levels
        else:
            try:
                _restore_level(dbapi, levels)
            except BaseException:
                fairy.invalidate()  # never back into the pool with its level lowered
                raise
            fairy.close()  # back to the pool, rolled back there


def _restore_level(dbapi, levels: list[int] | None) -> None:
    """A connection's synchronous level back to the pool's, before it goes back there."""
    if levels is not None and levels[1] != levels[0]:
        if dbapi.in_transaction:
            dbapi.rollback()  # the level cannot change inside a transaction (the pool rolls back anyway)
        dbapi.execute(f"PRAGMA synchronous={int(levels[0])}")


def sqlite_execute(dbapi, sql: str) -> None:
    """``sql`` through the SQLite driver, its error wrapped as SQLAlchemy's statement path wraps
    it (a "database is locked" is SQLAlchemy's OperationalError): for the BEGIN and COMMIT that
    skip that path (here and db.py's)."""
    try:
        dbapi.execute(sql)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


def group_commit(store) -> GroupCommit:
    """The store's group commit (``Store.commits``)."""
    return store.commits

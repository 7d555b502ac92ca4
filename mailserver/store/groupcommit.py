"""Group commit for SQLite: many small IMAP writes (STORE, APPEND, EXPUNGE...) share one COMMIT.

A commit with ``synchronous=FULL`` costs an fsync (~4-8 ms here) and SQLite takes one writer
at a time, so one transaction per command caps a process at a few hundred writes a second.
Instead, threads that want to write queue on one mutex; each runs its work in a SAVEPOINT of
a transaction shared with the threads queued beside it, and the last of a burst commits for
all of them. Nobody returns before the COMMIT that holds its work: durability is unchanged
("acknowledged means durable"), only fsyncs are shared. A failure inside one thread's work
rolls back its savepoint only; a failed COMMIT fails every thread of the batch.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator

from sqlalchemy.orm import Session

from ..errors import StorageError


_SAVEPOINT = "civicmail_write"


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
        #: set in a thread inside ``batch``
        self._local = threading.local()

    def _acquire(self) -> None:
        with self._count_lock:
            self._queued += 1
        self._mutex.acquire()
        with self._count_lock:
            self._queued -= 1

    def _open(self) -> tuple[Session, _Batch]:
        if self._session is None:
            self._cm = self.store.session()
            self._session = self._cm.__enter__()
            self._batch = _Batch()
        return self._session, self._batch  # type: ignore[return-value]

    def _commit(self) -> None:
        """Commit the open batch (mutex held) and wake its threads."""
        cm, batch = self._cm, self._batch
        self._session = self._cm = self._batch = None
        started = time.monotonic()
        try:
            cm.__exit__(None, None, None)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            batch.error = exc
        else:
            if self.on_commit is not None:
                self.on_commit(time.monotonic() - started)
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
    def batch(self) -> Iterator[None]:
        """One thread's writes in one transaction (the IMAP write lane): inside the block,
        ``write`` neither commits nor waits; the block's end commits them all, or raises
        StorageError if that COMMIT fails. Other writers wait for the whole block."""
        self._acquire()
        self._local.batching = True
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
            self._local.batching = False
            self._mutex.release()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        if getattr(self._local, "batching", False):
            with self._savepoint(self._open()[0]) as session:
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
        dbapi = session.connection().connection.dbapi_connection
        dbapi.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield session
        except BaseException:
            dbapi.execute(f"ROLLBACK TO {_SAVEPOINT}")
            dbapi.execute(f"RELEASE {_SAVEPOINT}")
            raise
        dbapi.execute(f"RELEASE {_SAVEPOINT}")

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


def group_commit(store) -> GroupCommit:
    """The store's group commit (``Store.commits``)."""
    return store.commits

"""SQLite writers of several processes wait for each other blocked in the kernel, not in SQLite's
busy handler.

SQLite takes one writer at a time. A BEGIN IMMEDIATE that finds the write lock taken by another
process runs the busy handler, which sleeps 1, 2, 5, 10 ... up to 100 ms between tries: with
`serve` workers (workers.py) writing at once, a writer slept on after the lock was free, and the
two processes left a third of the machine idle (docs/benchmarks.md). So each connection takes
an exclusive ``flock`` on a file beside the database (``<database>-writers``) before its BEGIN
IMMEDIATE and gives it back when its transaction ends (COMMIT, ROLLBACK, or a failed BEGIN):
a writer that waits is woken by the kernel the moment the one before it commits. The SQLite lock
is still taken and still decides; the file only orders the writers that use it (every
``Store`` connection does), and others (the sqlite3 command) meet SQLite's busy handler as before.

The wait is bounded by store.busy_timeout, as SQLite's is: past it the BEGIN fails with SQLite's
own "database is locked". ``flock`` has no timeout, so a wait that has to block runs in a helper
thread on a duplicate of the connection's descriptor; a helper whose waiter gave up releases the
lock as soon as it gets it, and the connection opens the file afresh (a new open file
description) so the late helper can never release a lock the connection holds later. The kernel
drops the lock of a process that dies, so a writer killed mid-transaction never blocks the others.
Each process's group commit (groupcommit.py) keeps batching: its writers queue on its mutex while
its one BEGIN waits here.
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import os
import sqlite3
import threading

#: the file beside the database whose lock orders the writers
SUFFIX = "-writers"

#: blocking waits for the lock, one thread each; bounded (a wait beyond them queues, still bounded
#: by its timeout). Writers of one process mostly queue on its group commit's mutex first.
_helpers = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="sqlite-writers")


class _Wait:
    """A helper's blocking flock, and whether its waiter still wants the lock."""

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)  # the same open file description: its lock is the connection's
        self.guard = threading.Lock()
        self.abandoned = False
        self.acquired = False

    def run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self.guard:
                if self.abandoned:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                else:
                    self.acquired = True
        finally:
            os.close(self.fd)


class QueuedWriters(sqlite3.Connection):
    """A SQLite connection whose BEGIN IMMEDIATE first takes the writers' file lock (the module's
    text). ``timeout`` (seconds) bounds the wait; subclassed per engine (``factory``)."""

    timeout = 30.0

    def __init__(self, database, *args, **kwargs) -> None:
        super().__init__(database, *args, **kwargs)
        name = os.fspath(database)
        memory = name in ("", ":memory:") or name.startswith("file:")
        self._lock_path = None if memory else name + SUFFIX
        self._lock_fd = -1
        self._locked = False

    def execute(self, sql, *args):
        if self._locked:
            return self._then_give_back(sqlite3.Connection.execute, sql, *args)  # a COMMIT, ROLLBACK
        if sql == "BEGIN IMMEDIATE" and self._lock_path is not None:
            self._take()
            try:
                return super().execute(sql, *args)
            except BaseException:
                self._give()
                raise
        # Without the lock there is nothing to give back: the readers' BEGIN and ROLLBACK and
        # every statement of a connection that is not writing go straight to the driver.
        return sqlite3.Connection.execute(self, sql, *args)

    def commit(self) -> None:
        if self._locked:
            self._then_give_back(sqlite3.Connection.commit)
        else:
            sqlite3.Connection.commit(self)

    def rollback(self) -> None:
        if self._locked:
            self._then_give_back(sqlite3.Connection.rollback)
        else:
            sqlite3.Connection.rollback(self)

    def _then_give_back(self, method, *args):
        """``method(self, *args)``, then the lock back if the transaction is over."""
        try:
            return method(self, *args)
        finally:
            if self._locked and not self.in_transaction:
                self._give()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._give()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _take(self) -> None:
        if self._lock_fd < 0:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            wait = _Wait(self._lock_fd)
            done = _helpers.submit(wait.run)
            try:
                done.result(self.timeout)
            except concurrent.futures.TimeoutError:
                pass
            with wait.guard:
                if not wait.acquired:
                    wait.abandoned = True
                    os.close(self._lock_fd)  # the late helper's lock is on the old description
                    self._lock_fd = -1
                    raise sqlite3.OperationalError("database is locked") from None
        self._locked = True

    def _give(self) -> None:
        if self._locked:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def factory(timeout: float) -> type[QueuedWriters]:
    """The connection class of one engine: its waits bounded by ``timeout`` seconds."""
    return type("QueuedWriters", (QueuedWriters,), {"timeout": timeout})

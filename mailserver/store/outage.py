"""When the database stops answering: which errors mean that, how an outage is logged, and the
guard that keeps a write whose client was told "try again later" from committing after.

An outage is logged once with its traceback, then one line per failure until a store call
succeeds again, then one line with its length: a database gone for a minute under load is a few
thousand short lines, not 70,000 lines of tracebacks.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Callable, TypeVar

from sqlalchemy import exc as sa_exc

from ..errors import StoreUnavailable

log = logging.getLogger("civicmail.store")
T = TypeVar("T")

#: errors that say the database is unreachable, slow or locked, not that a statement is wrong:
#: SQLAlchemy's wrappers, and the drivers' own (the hot paths in driver.py bypass SQLAlchemy)
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError,
                                                  sa_exc.TimeoutError, sqlite3.OperationalError,
                                                  sqlite3.InterfaceError, StoreUnavailable)
try:  # psycopg is there when PostgreSQL is used
    import psycopg

    _OUTAGE_TYPES += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover
    pass


def is_outage(exc: BaseException) -> bool:
    """True for an error of the database's availability (connection lost or refused, timed out,
    locked, disk), which deserves "try again later" rather than "internal error"."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _OUTAGE_TYPES)


def describe(exc: BaseException) -> str:
    """One short line: the driver's first line, never SQLAlchemy's statement and parameters."""
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    inner = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = (str(inner).strip().splitlines() or [""])[0]
    return f"{inner.__class__.__name__}: {text[:200]}" if text else inner.__class__.__name__


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The typed error for an outage (its text is for operators; clients see their protocol's reply)."""
    return exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(describe(exc))


class OutageLog:
    """The state of the store as this process sees it: available, or out since a failure.

    ``failed`` logs the first failure of an outage with its traceback and the later ones in one
    line each; ``succeeded`` ends the outage with one line. ``on_outage`` callbacks run (in the
    failing thread) when an outage begins: IMAP uses it to end IDLE sessions. Thread-safe."""

    def __init__(self, logger: logging.Logger = log, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self.on_outage: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            first = self._since is None
            if first:
                self._since = self._clock()
                self._failures = 0
            self._failures += 1
        if first:
            self._log.error("store unavailable (%s): %s; further failures are logged in one line each until it "
                            "recovers", what, describe(exc), exc_info=not isinstance(exc, StoreUnavailable) and exc)
            for callback in list(self.on_outage):
                try:
                    callback()
                except Exception:  # a listener's bug must not hide the outage
                    self._log.exception("outage listener failed")
        else:
            self._log.warning("store unavailable (%s): %s", what, describe(exc))

    def succeeded(self) -> None:
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._since is None:
                return
            seconds, failures = self._clock() - self._since, self._failures
            self._since = None
        self._log.warning("store available again after %.1f s (%d failures)", seconds, failures)


class CommitGuard:
    """Who decides first about one write: its waiter giving up at the deadline (the client is
    answered 4xx), or the writer thread starting the COMMIT. Once the waiter gave up, the writer
    rolls back; once the COMMIT started, the waiter does not give up (SQLite, a local file) or
    relies on the database checking the deadline itself (PostgreSQL: ``Store.commit_before``)."""

    __slots__ = ("at", "_lock", "_state")

    def __init__(self, at: float) -> None:
        #: the deadline, wall-clock seconds (time.time(): PostgreSQL compares it with its clock)
        self.at = at
        self._lock = threading.Lock()
        self._state = "open"

    @classmethod
    def within(cls, seconds: float) -> "CommitGuard":
        return cls(time.time() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.time())

    @property
    def abandoned(self) -> bool:
        return self._state == "abandoned"

    def abandon(self) -> bool:
        """The waiter's deadline came: True if the write will now never commit."""
        with self._lock:
            if self._state == "committing":
                return False
            self._state = "abandoned"
            return True

    def claim(self) -> bool:
        """The writer is about to COMMIT: True if it may (nobody gave up, the deadline is ahead)."""
        with self._lock:
            if self._state == "abandoned" or time.time() >= self.at:
                self._state = "abandoned"
                return False
            self._state = "committing"
            return True

    def release(self) -> None:
        """The COMMIT did not happen after all (rolled back): the waiter may give up again."""
        with self._lock:
            if self._state == "committing":
                self._state = "open"


class Backoff:
    """Waits between attempts at a store operation that failed for an outage: 0.5, 1, 2, 4 s ...
    (at most ``most``), for up to ``seconds`` in all; then StoreUnavailable, in one line."""

    def __init__(self, seconds: float, first: float = 0.5, most: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.delay, self.most = seconds, first, most
        self._sleep, self._clock = sleep, clock
        self._start = clock()
        self.attempts = 0

    def wait(self, exc: BaseException) -> None:
        """After a failed attempt: sleep, or raise StoreUnavailable when the time is up."""
        self.attempts += 1
        elapsed = self._clock() - self._start
        if elapsed + self.delay > self.seconds:
            raise StoreUnavailable(f"the database is unavailable ({describe(exc)}); gave up after "
                                   f"{self.attempts} attempt(s) in {elapsed:.0f} s") from None
        log.warning("store unavailable: %s; retrying in %.1f s", describe(exc), self.delay)
        self._sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)


def retrying(seconds: float, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` (one transaction), run again after an outage error with Backoff."""
    backoff = Backoff(seconds)
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_outage(exc):
                raise
            backoff.wait(exc)

"""Failed-login throttling, per client IP and per account, in memory (one process).

An attempt is reserved before its password is checked and settled after: ``acquire`` counts it
at once (as in flight), ``failed`` turns it into a failure, ``succeeded`` releases it. So however
many attempts arrive together, no more are checked than the limits allow (checking first and
counting after let 300 simultaneous wrong LOGINs through limits of 10 and 20). An attempt that
finds the limit taken only by attempts in flight waits for them to settle rather than being
refused: a mail client opening ten connections at once with the right password is delayed by a
few hashes, never locked out. Accounts are keyed by ``normalise_login``, the same form the
password lookup uses.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from ..config import LoginConfig
from .addresses import normalise_login


@dataclass
class _Window:
    #: times of the failures in the window, oldest first
    failures: deque[float] = field(default_factory=deque)
    #: attempts reserved and not yet settled
    in_flight: int = 0


class _Counts:
    """Failures in a sliding window plus attempts in flight, per key."""

    #: past this many keys, windows with nothing left in them are swept (memory follows the
    #: attempts of the last window, not every name or address ever tried)
    SWEEP_AT = 100_000

    def __init__(self, limit: int, window_seconds: int, clock) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _expire(self, w: _Window, cutoff: float) -> None:
        while w.failures and w.failures[0] < cutoff:
            w.failures.popleft()

    def failures(self, key: str) -> int:
        w = self._windows.get(key)
        if w is None:
            return 0
        self._expire(w, self._clock() - self.window_seconds)
        return len(w.failures)

    def full(self, key: str) -> bool:
        """The failures and the attempts in flight fill the limit."""
        w = self._windows.get(key)
        return w is not None and self.failures(key) + w.in_flight >= self.limit

    def reserve(self, key: str) -> None:
        if key not in self._windows and len(self._windows) >= self.SWEEP_AT:
            self._sweep()
        self._windows.setdefault(key, _Window()).in_flight += 1

    def settle(self, key: str, failed: bool, forget_failures: bool = False) -> None:
        w = self._windows.get(key)
        if w is None:
            return
        w.in_flight = max(w.in_flight - 1, 0)
        if forget_failures:
            w.failures.clear()
        if failed:
            w.failures.append(self._clock())
        elif not w.failures and not w.in_flight:
            del self._windows[key]

    def _sweep(self) -> None:
        cutoff = self._clock() - self.window_seconds
        for key, w in list(self._windows.items()):
            self._expire(w, cutoff)
            if not w.failures and not w.in_flight:
                del self._windows[key]


class LoginThrottle:
    def __init__(self, config: LoginConfig, clock=time.monotonic) -> None:
        self._by_ip = _Counts(config.max_failures_per_ip, config.window_seconds, clock)
        self._by_account = _Counts(config.max_failures_per_account, config.window_seconds, clock)
        #: set (and replaced) whenever an attempt settles, for the attempts waiting on one
        self._settled: asyncio.Event | None = None

    def blocked(self, ip: str, login: str) -> bool:
        """This IP or this login has failed too often in the window: refuse unchecked."""
        account = normalise_login(login)
        return (self._by_ip.failures(ip) >= self._by_ip.limit
                or self._by_account.failures(account) >= self._by_account.limit)

    def reserve(self, ip: str, login: str) -> bool:
        """Take a slot for one attempt before its password is checked, if the failures and the
        attempts in flight leave one; False (and nothing taken) otherwise. Every True is settled
        later by exactly one of failed, succeeded or released."""
        account = normalise_login(login)
        if self._by_ip.full(ip) or self._by_account.full(account):
            return False
        self._by_ip.reserve(ip)
        self._by_account.reserve(account)
        return True

    async def acquire(self, ip: str, login: str) -> bool:
        """``reserve``, waiting while only attempts in flight fill a limit (their outcome decides
        whether this one may be checked); False as soon as failures alone fill it. The wait is
        bounded by the attempts in flight (at most the limit), each one password check."""
        while not self.blocked(ip, login):
            if self.reserve(ip, login):
                return True
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()
        return False

    def _wake(self) -> None:
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def failed(self, ip: str, login: str) -> None:
        """The password was wrong: the reserved attempt counts as a failure of both."""
        self._by_ip.settle(ip, failed=True)
        self._by_account.settle(normalise_login(login), failed=True)
        self._wake()

    def succeeded(self, ip: str, login: str) -> None:
        """The password was right: the attempt is released, and the account's past failures are
        forgotten (not the IP's: one right password does not vouch for the other names tried)."""
        self._by_ip.settle(ip, failed=False)
        self._by_account.settle(normalise_login(login), failed=False, forget_failures=True)
        self._wake()

    def released(self, ip: str, login: str) -> None:
        """The check could not be made (the store failed): the attempt counts for nothing."""
        self._by_ip.settle(ip, failed=False)
        self._by_account.settle(normalise_login(login), failed=False)
        self._wake()

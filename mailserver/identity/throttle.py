"""Failed-login throttling, per client IP and per account, in memory (one process)."""
from __future__ import annotations

import time
from collections import defaultdict, deque

from ..config import LoginConfig


class LoginThrottle:
    def __init__(self, config: LoginConfig, clock=time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._by_ip: dict[str, deque[float]] = defaultdict(deque)
        self._by_account: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, bucket: dict[str, deque[float]], key: str) -> int:
        window = bucket.get(key)
        if not window:
            return 0
        cutoff = self._clock() - self._config.window_seconds
        while window and window[0] < cutoff:
            window.popleft()
        if not window:
            del bucket[key]
            return 0
        return len(window)

    def blocked(self, ip: str, login: str) -> bool:
        """True when this IP or this login has failed too often lately: refuse without checking."""
        return (self._recent(self._by_ip, ip) >= self._config.max_failures_per_ip
                or self._recent(self._by_account, login.lower()) >= self._config.max_failures_per_account)

    def failed(self, ip: str, login: str) -> None:
        now = self._clock()
        self._by_ip[ip].append(now)
        self._by_account[login.lower()].append(now)

    def succeeded(self, ip: str, login: str) -> None:
        self._by_account.pop(login.lower(), None)

"""Commands per second, per connection: a token bucket that slows a client down, never refuses
it (DESIGN.md: every connection is bounded). The session asks how long to wait before it runs
the next command; a client within the rate never waits."""
from __future__ import annotations


class Pacer:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now

    def delay(self, now: float) -> float:
        """Take one command's token; the seconds to wait first (0.0 when one is there)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        if self.tokens >= 0.0:
            return 0.0
        return -self.tokens / self.rate

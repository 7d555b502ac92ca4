"""Recently verified passwords, so that a client logging in again skips argon2 (Dovecot's auth cache).

A mail client logs in on every connection and every poll; argon2id costs tens of milliseconds
of CPU by design, and dominated a load that logs in and out. After a password verified, the cache
remembers, per login, HMAC-SHA256(secret, login, stored hash, password) and an expiry; a later
login whose MAC matches skips the hash. The password is never kept, and the MAC's key is random
per process, so what memory holds is worthless elsewhere.

Staleness cannot happen across processes: the stored hash is in the MAC, and the caller reads it
from the account row at every login (the same indexed read the uncached login does), so a new
password set by `civicmail citizen passwd` in another process or on another node misses at once;
the account's state and the agency's are checked by the caller as before. A failed check of a
login forgets its entry (so a lock-out, which needs failures, leaves nothing behind); failures
are never cached. Bounded: at most ``size`` logins, least recently used first out, each entry
good for ``ttl`` seconds from its verification.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict


def _field(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data  # length-prefixed: no two field splits collide


class LoginCache:
    """Thread-safe (logins are checked on the store's threads)."""

    def __init__(self, size: int, ttl_seconds: float, clock=time.monotonic, secret: bytes | None = None) -> None:
        self.size = size
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)
        #: login -> (MAC, expiry), least recently used first
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _mac(self, login: str, stored: str, password: str) -> bytes:
        return hmac.new(self._secret, _field(login) + _field(stored) + _field(password), hashlib.sha256).digest()

    def hit(self, login: str, stored: str, password: str) -> bool:
        """``password`` verified against ``stored`` for ``login`` within the TTL."""
        if self.size <= 0:
            return False
        mac = self._mac(login, stored, password)
        with self._lock:
            entry = self._entries.get(login)
            if entry is None:
                return False
            if entry[1] <= self._clock():
                del self._entries[login]
                return False
            if not hmac.compare_digest(entry[0], mac):
                return False
            self._entries.move_to_end(login)
            return True

    def add(self, login: str, stored: str, password: str) -> None:
        """Remember a successful verification (never call it for a failed one)."""
        if self.size <= 0:
            return
        mac = self._mac(login, stored, password)
        with self._lock:
            self._entries[login] = (mac, self._clock() + self.ttl_seconds)
            self._entries.move_to_end(login)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, login: str) -> None:
        with self._lock:
            self._entries.pop(login, None)

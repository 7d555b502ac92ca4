"""Passwords: argon2id (memory-hard), constant-time verification, hashes that upgrade themselves.

Every hash runs on this checker's own few threads (``passwords.hash_threads``), whoever asks: each
argon2id call takes ``passwords.memory_cost_kib`` (19 MiB by default) from malloc, and glibc keeps
a freed block that size in the arena of the thread that used it (its mmap threshold rises to the
block's size after the first free), so hashes spread over the 16 store threads held up to 16 x
19 MiB for good: the server grew from 82 to 318 MiB in two runs of `civicmail bench imap --mode
stress --real-hash`. On a lane of its own, the memory is at most threads x memory cost, and
more concurrent hashes than cores would only have queued for the CPU anyway.
"""
from __future__ import annotations

import concurrent.futures
import os
import secrets
import threading
from typing import Callable, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..config import PasswordConfig
from ..errors import ValidationError
from .logincache import LoginCache

MIN_LENGTH = 8
# An unambiguous alphabet for activation codes printed in letters (no 0/O, 1/I/L).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
T = TypeVar("T")


class Passwords:
    def __init__(self, config: PasswordConfig, cache: LoginCache | None = None) -> None:
        self._hasher = PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_cost_kib,
            parallelism=config.parallelism,
            type=Type.ID,
        )
        self._lane = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.hash_threads or os.cpu_count() or 1, thread_name_prefix="argon2")
        # A hash to verify against when the account does not exist, so that a missing
        # account costs the same time as a wrong password.
        self._dummy = self._on_lane(self._hasher.hash, secrets.token_hex(16))
        #: recently verified logins (logincache.py); None: every login is hashed
        self.cache = cache
        #: logins checked by hashing and logins served by the cache (read by the metrics)
        self.checks = {"hashed": 0, "cached": 0}
        self._count_lock = threading.Lock()

    def _on_lane(self, fn: Callable[..., T], *args) -> T:
        """Blocking: ``fn`` on the hashing threads (see the module's docstring)."""
        return self._lane.submit(fn, *args).result()

    def hash(self, password: str) -> str:
        check_strength(password)
        return self._on_lane(self._hasher.hash, password)

    def verify(self, stored: str | None, password: str) -> bool:
        return self._on_lane(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def check_login(self, login: str, stored: str | None, password: str) -> bool:
        """``verify`` for a login, served from the cache when this login verified this password
        against this very ``stored`` hash lately; a success is remembered, a failure forgets the
        login's entry. ``login`` is the normalised form (``normalise_login``)."""
        if stored is not None and self.cache is not None and self.cache.hit(login, stored, password):
            self._count("cached")
            return True
        self._count("hashed")
        ok = self.verify(stored, password)
        if self.cache is not None:
            if ok:
                self.cache.add(login, stored, password)
            else:
                self.cache.forget(login)
        return ok

    def _count(self, how: str) -> None:
        with self._count_lock:
            self.checks[how] += 1

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"password must have at least {MIN_LENGTH} characters")
    if password.strip() != password or "\n" in password:
        raise ValidationError("password must not start or end with spaces or contain line breaks")


def activation_code() -> str:
    """16 characters in groups of four, about 79 bits: typed from a letter, hashed with HMAC."""
    # 104 random bits reduced to 16 base-31 digits (31**16 is about 2**79; the modulo bias over
    # 2**104 is negligible) - one call to the OS for the whole code.
    value = int.from_bytes(secrets.token_bytes(13), "big")
    chars = []
    for _ in range(16):
        value, digit = divmod(value, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[digit])
    raw = "".join(chars)
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalize_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()

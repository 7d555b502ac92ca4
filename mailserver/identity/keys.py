"""The keys that protect citizens' ID numbers: AES-GCM for the number, HMAC-SHA256 for its index.

The key file holds numbered encryption versions and one MAC key. A ciphertext starts with its key
version (2 bytes, big-endian) so that the encryption key can rotate without downtime: new writes
use the current version, older rows still decrypt. ``civicmail keys rotate`` adds a version, makes
it current and re-encrypts the rows still on older ones (citizens' ID numbers and the sealed rows
of drops); ``civicmail keys retire`` then drops the versions no row uses any more.

The MAC key is not rotated. It keys the ID-number index (``index``) and the hashes of activation
codes and other secrets (``secret_hash``); a new MAC key would mean re-indexing every citizen and
would invalidate every activation code not yet used, which are printed on letters already sent.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from hashlib import sha256
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError, UserError

KEYFILE = "idnumber.json"
LOCKFILE = "idnumber.lock"
#: a ciphertext's first bytes: its key version, big-endian
VERSION_BYTES = 2


def version_of(blob: bytes) -> int:
    """The key version a ciphertext (an ID number or a sealed drop row) was written with."""
    return int.from_bytes(blob[:VERSION_BYTES], "big")


def version_prefix(version: int) -> bytes:
    return version.to_bytes(VERSION_BYTES, "big")


@contextlib.contextmanager
def key_file_lock(directory: Path) -> Iterator[None]:
    """Held by whatever rewrites the key file (``keys rotate``, ``keys retire``), so that two of
    them never both add a version and one overwrites the other's key."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{directory}: another `civicmail keys` command is working on the key file") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def write_key_file(path: Path, data: dict) -> Path:
    """Write a key file as JSON, readable by its owner only, atomically and durably: the rename
    itself is synced, since a key file that reverted after a crash would lose a key that data
    (rows, signed tokens) may already depend on."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


@dataclass(frozen=True)
class IdKeyring:
    current: int
    enc_keys: dict[int, bytes]
    mac_key: bytes

    # -- creation and storage ------------------------------------------------------------
    @classmethod
    def generate(cls) -> "IdKeyring":
        return cls(current=1, enc_keys={1: AESGCM.generate_key(bit_length=256)}, mac_key=secrets.token_bytes(32))

    def save(self, directory: Path) -> Path:
        data = {
            "current": self.current,
            "enc": {str(v): base64.b64encode(k).decode() for v, k in self.enc_keys.items()},
            "mac": base64.b64encode(self.mac_key).decode(),
        }
        return write_key_file(directory / KEYFILE, data)

    @classmethod
    def load(cls, directory: Path) -> "IdKeyring":
        path = directory / KEYFILE
        try:
            data = json.loads(path.read_text())
            ring = cls(
                current=int(data["current"]),
                enc_keys={int(v): base64.b64decode(k) for v, k in data["enc"].items()},
                mac_key=base64.b64decode(data["mac"]),
            )
            if ring.current not in ring.enc_keys:
                raise KeyError("current")
            return ring
        except FileNotFoundError:
            raise ConfigError(f"{path}: ID-number key file missing (run `civicmail init`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: damaged ID-number key file ({exc.__class__.__name__})") from None

    @classmethod
    def load_or_create(cls, directory: Path) -> "IdKeyring":
        if (directory / KEYFILE).exists():
            return cls.load(directory)
        ring = cls.generate()
        ring.save(directory)
        return ring

    def rotated(self) -> "IdKeyring":
        version = max(self.enc_keys) + 1
        keys = dict(self.enc_keys)
        keys[version] = AESGCM.generate_key(bit_length=256)
        return IdKeyring(current=version, enc_keys=keys, mac_key=self.mac_key)

    def without(self, versions: Iterable[int]) -> "IdKeyring":
        """The ring less these encryption versions (never the current one)."""
        drop = set(versions)
        if self.current in drop:
            raise ValueError("the current key version cannot be removed")
        return IdKeyring(current=self.current, enc_keys={v: k for v, k in self.enc_keys.items() if v not in drop},
                         mac_key=self.mac_key)

    # -- use -----------------------------------------------------------------------------
    @cached_property
    def _ciphers(self) -> dict[int, AESGCM]:
        return {v: AESGCM(k) for v, k in self.enc_keys.items()}

    def index(self, number: str) -> bytes:
        """Keyed hash of a normalised ID number: what the store looks numbers up by."""
        return hmac.digest(self.mac_key, number.encode("ascii"), "sha256")  # one-shot: a third of hmac.new's cost

    def encrypt(self, number: str) -> bytes:
        nonce = secrets.token_bytes(12)
        version = self.current
        aad = version.to_bytes(2, "big")
        return aad + nonce + self._ciphers[version].encrypt(nonce, number.encode("ascii"), aad)

    def decrypt(self, blob: bytes) -> str:
        version = version_of(blob)
        nonce, body = blob[2:14], blob[14:]
        return self._ciphers[version].decrypt(nonce, body, blob[:2]).decode("ascii")

    def secret_hash(self, purpose: str, value: str) -> bytes:
        """Keyed hash for short-lived high-entropy secrets (activation codes)."""
        return hmac.new(self.mac_key, f"{purpose}\0{value}".encode(), sha256).digest()

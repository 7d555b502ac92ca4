"""The keys that protect citizens' ID numbers: AES-GCM for the number, HMAC-SHA256 for its index.

The key file holds numbered versions; a ciphertext starts with its key version so that keys can
rotate without downtime (new writes use the current version, old rows still decrypt). The HMAC
index always uses the current version's MAC key; rotating it means re-indexing, which
``civicmail keys rotate`` does in one pass.
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError

KEYFILE = "idnumber.json"


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
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = directory / KEYFILE
        data = {
            "current": self.current,
            "enc": {str(v): base64.b64encode(k).decode() for v, k in self.enc_keys.items()},
            "mac": base64.b64encode(self.mac_key).decode(),
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> "IdKeyring":
        path = directory / KEYFILE
        try:
            data = json.loads(path.read_text())
            return cls(
                current=int(data["current"]),
                enc_keys={int(v): base64.b64decode(k) for v, k in data["enc"].items()},
                mac_key=base64.b64decode(data["mac"]),
            )
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

    # -- use -----------------------------------------------------------------------------
    @cached_property
    def _ciphers(self) -> dict[int, AESGCM]:
        return {v: AESGCM(k) for v, k in self.enc_keys.items()}

    def index(self, number: str) -> bytes:
        """Keyed hash of a normalised ID number: what the store looks numbers up by."""
        return hmac.new(self.mac_key, number.encode("ascii"), sha256).digest()

    def encrypt(self, number: str) -> bytes:
        nonce = secrets.token_bytes(12)
        version = self.current
        aad = version.to_bytes(2, "big")
        return aad + nonce + self._ciphers[version].encrypt(nonce, number.encode("ascii"), aad)

    def decrypt(self, blob: bytes) -> str:
        version = int.from_bytes(blob[:2], "big")
        nonce, body = blob[2:14], blob[14:]
        return self._ciphers[version].decrypt(nonce, body, blob[:2]).decode("ascii")

    def secret_hash(self, purpose: str, value: str) -> bytes:
        """Keyed hash for short-lived high-entropy secrets (activation codes)."""
        return hmac.new(self.mac_key, f"{purpose}\0{value}".encode(), sha256).digest()

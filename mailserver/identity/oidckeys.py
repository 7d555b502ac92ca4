"""The OpenID Connect provider's signing keys (RS256), kept like the ID-number keys: a JSON file
in the keys folder, readable by its owner only (``keys.write_key_file``).

Rotation without breaking a signed token: ``rotated`` retires the current key and makes a new
one current; a retired key stays published in the JWKS for ``oidc.id_token_ttl`` seconds after
its retirement (every ID token it signed has expired by then), and is dropped from the file at
the next rotation after that. `serve` re-reads the file when it changes, so `civicmail oidc
rotate-keys` takes effect without a restart.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from joserfc.jwk import RSAKey

from ..errors import ConfigError
from .keys import write_key_file

KEYFILE = "oidc-signing.json"
ALG = "RS256"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: float
    #: when it stopped signing (None: the current key)
    retired: float | None
    jwk: dict

    @cached_property
    def key(self) -> RSAKey:
        """The key as joserfc signs with it. Imported once: importing checks the RSA key, which
        costs hundreds of milliseconds (measured: 0.4 s on this machine under load)."""
        return RSAKey.import_key(self.jwk)

    def public(self) -> dict:
        return {**self.key.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ALG}


@dataclass(frozen=True)
class SigningKeys:
    keys: tuple[SigningKey, ...]

    @classmethod
    def generate(cls) -> "SigningKeys":
        return cls((_new_key(),))

    @property
    def current(self) -> SigningKey:
        return next(k for k in reversed(self.keys) if k.retired is None)

    def published(self, id_token_ttl: int, now: float | None = None) -> list[dict]:
        """The JWKS's keys: the current one and those retired less than id_token_ttl ago."""
        now = time.time() if now is None else now
        return [k.public() for k in self.keys if k.retired is None or now - k.retired < id_token_ttl]

    def rotated(self, id_token_ttl: int, now: float | None = None) -> "SigningKeys":
        now = time.time() if now is None else now
        kept = [k if k.retired is not None else SigningKey(k.kid, k.created, now, k.jwk)
                for k in self.keys if k.retired is None or now - k.retired < id_token_ttl]
        return SigningKeys(tuple(kept) + (_new_key(),))

    def save(self, directory: Path) -> Path:
        return write_key_file(directory / KEYFILE, {"keys": [
            {"kid": k.kid, "created": k.created, "retired": k.retired, "jwk": k.jwk} for k in self.keys]})

    @classmethod
    def load(cls, directory: Path) -> "SigningKeys":
        path = directory / KEYFILE
        try:
            data = json.loads(path.read_text())
            keys = tuple(SigningKey(str(k["kid"]), float(k["created"]), None if k["retired"] is None
                                    else float(k["retired"]), dict(k["jwk"])) for k in data["keys"])
            ring = cls(keys)
            ring.current  # noqa: B018 (StopIteration if none is current)
            return ring
        except FileNotFoundError:
            raise ConfigError(f"{path}: OpenID Connect signing key missing (run `civicmail init` or "
                              "`civicmail db upgrade`)") from None
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise ConfigError(f"{path}: damaged OpenID Connect key file ({exc.__class__.__name__})") from None

    @classmethod
    def ensure(cls, directory: Path) -> bool:
        """Make the key file if there is none; True if it was made."""
        if (directory / KEYFILE).exists():
            return False
        cls.generate().save(directory)
        return True


def _new_key() -> SigningKey:
    key = RSAKey.generate_key(2048, private=True)
    return SigningKey(secrets.token_urlsafe(12), time.time(), None, key.as_dict(private=True))


class KeyFile:
    """The signing keys as `serve` uses them: read again whenever the file changes (a rotation
    by the CLI while the server runs). Blocking (a stat per use): call it on the store lane."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / KEYFILE
        self.directory = directory
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: SigningKeys | None = None

    def get(self) -> SigningKeys:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if stamp != self._stamp or self._keys is None:
                self._keys = SigningKeys.load(self.directory)
                self._stamp = stamp
            return self._keys

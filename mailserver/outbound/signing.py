"""DKIM signing of what leaves the city (dkimpy). Blocking and slow with RSA (pure-Python
arithmetic, ~120 signatures/s): call it in the executor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dkim

from ..errors import ConfigError


@dataclass(frozen=True)
class DkimSigner:
    selector: str
    key_pem: bytes
    #: the domain signed for when the sender's own domain is not one of ours
    default_domain: str
    local_domains: tuple[str, ...]

    @classmethod
    def load(cls, key_path: Path, selector: str, default_domain: str, local_domains: tuple[str, ...]) -> "DkimSigner":
        try:
            pem = key_path.read_bytes()
        except OSError:
            raise ConfigError(f"DKIM key {key_path} missing (run `civicmail init`, or set dkim.key)") from None
        return cls(selector, pem, default_domain, local_domains)

    @property
    def algorithm(self) -> bytes:
        """RSA for a PEM key (what `civicmail init` makes); Ed25519 (RFC 8463, ~50 times faster
        to sign) for dkimpy's base64 Ed25519 key format."""
        return b"rsa-sha256" if self.key_pem.lstrip().startswith(b"-----BEGIN") else b"ed25519-sha256"

    def domain_for(self, sender: str) -> str:
        domain = sender.rpartition("@")[2].lower()
        return domain if domain in self.local_domains else self.default_domain

    def sign(self, raw: bytes, sender: str) -> bytes:
        """The message with a DKIM-Signature header prepended (relaxed/simple, rsa-sha256)."""
        signature = dkim.sign(raw, self.selector.encode(), self.domain_for(sender).encode(), self.key_pem,
                              canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=self.algorithm)
        return signature + raw

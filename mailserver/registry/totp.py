"""The web sign-in's second factor: TOTP (RFC 6238, 30-second steps, 6 digits, SHA-1: what every
authenticator app reads from an ``otpauth://`` URI), with pyotp.

The secret is stored AES-GCM encrypted under a key derived from the ID-number MAC key (which never
rotates, so `keys rotate` / `keys retire` need not know these rows). A code is accepted once:
``last_step`` remembers the step of the last code taken, and an older or equal step is refused
(RFC 6238 5.2), so a code seen over a shoulder cannot be used again. One step of clock drift
either way is allowed.
"""
from __future__ import annotations

import secrets
import time

import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update

from ..errors import NotFound
from ..identity.addresses import normalise_address
from ..store.models import Account, AccountTotp
from . import audit
from .context import Registry

STEP = 30
#: steps of clock drift accepted either way
DRIFT = 1


def _cipher(reg: Registry) -> AESGCM:
    return AESGCM(reg.keyring.secret_hash("totp-secret-key", "v1"))


def _account_id(session, address: str) -> int:
    account_id = session.scalar(select(Account.id).where(Account.address == normalise_address(address)))
    if account_id is None:
        raise NotFound(f"no account {address}")
    return account_id


def enable(reg: Registry, address: str, actor: str = "operator") -> tuple[str, str]:
    """A new TOTP secret for the account (replacing any): (secret, otpauth URI for a QR code)."""
    secret = pyotp.random_base32()
    nonce = secrets.token_bytes(12)
    with reg.store.session() as s:
        account_id = _account_id(s, address)
        blob = nonce + _cipher(reg).encrypt(nonce, secret.encode(), str(account_id).encode())
        row = s.get(AccountTotp, account_id)
        if row is None:
            s.add(AccountTotp(account_id=account_id, secret_cipher=blob, last_step=0))
        else:
            row.secret_cipher, row.last_step = blob, 0
        audit.record(s, "account.totp-enable", normalise_address(address), actor=actor)
    uri = pyotp.TOTP(secret).provisioning_uri(name=normalise_address(address), issuer_name=reg.config.city.name)
    return secret, uri


def disable(reg: Registry, address: str, actor: str = "operator") -> bool:
    with reg.store.session() as s:
        row = s.get(AccountTotp, _account_id(s, address))
        if row is None:
            return False
        s.delete(row)
        audit.record(s, "account.totp-disable", normalise_address(address), actor=actor)
        return True


def required(reg: Registry, account_id: int) -> bool:
    with reg.store.reader() as s:
        return s.get(AccountTotp, account_id) is not None


def verify(reg: Registry, account_id: int, code: str, now: float | None = None) -> bool:
    """Whether ``code`` is the account's current code, not used before; taking it uses it."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return False
    now = time.time() if now is None else now
    with reg.store.session() as s:
        row = s.get(AccountTotp, account_id)
        if row is None:
            return False
        blob = row.secret_cipher
        secret = _cipher(reg).decrypt(blob[:12], blob[12:], str(account_id).encode()).decode()
        totp = pyotp.TOTP(secret, interval=STEP)
        current = int(now // STEP)
        for step in range(current - DRIFT, current + DRIFT + 1):
            if step > row.last_step and secrets.compare_digest(totp.at(step * STEP), code):
                # the compare-and-set makes two simultaneous uses of one code succeed once
                taken = s.execute(update(AccountTotp).where(AccountTotp.account_id == account_id,
                                                            AccountTotp.last_step < step).values(last_step=step))
                return taken.rowcount == 1
    return False

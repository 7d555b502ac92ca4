"""The web sign-in's other second factor: passkeys (WebAuthn), with py_webauthn doing the relying
party's checks (client data, origin, RP ID hash, attestation, COSE key, signature, sign count).

A ceremony's challenge is a row (``webauthn_challenge``) made when the browser asks for one and
deleted when it is taken: it is good once, for ``CHALLENGE_SECONDS``, for one account and purpose,
and only from the browser session it was made for (``binding``: the SHA-256 of the cookie the
page's CSRF token is tied to). Any number of nodes share them through the store.

The relying party is the host of ``http.public_url`` (the RP ID must be a domain: on an IP
address, or on plain http anywhere but localhost, which browsers do not treat as a secure
context, passkeys are off), and the expected origin that URL's scheme, host and port.

Blocking: every function here runs on the store lane.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
import urllib.parse
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from webauthn import (generate_authentication_options, generate_registration_options, options_to_json,
                      verify_authentication_response, verify_registration_response)
from webauthn.helpers import (parse_authentication_credential_json, parse_authenticator_data,
                              parse_client_data_json, parse_registration_credential_json)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (AuthenticatorSelectionCriteria, AuthenticatorTransport, CredentialDeviceType,
                                      PublicKeyCredentialDescriptor, ResidentKeyRequirement,
                                      UserVerificationRequirement)

from ..errors import NotFound
from ..identity.addresses import normalise_address
from ..store.models import Account, AccountPasskey, Citizen, WebauthnChallenge, as_utc, utcnow
from . import audit
from .context import Registry

#: seconds a challenge is good for (a ceremony takes the citizen a few seconds; the sign-in's
#: second step itself is good for 300)
CHALLENGE_SECONDS = 300
#: what the browser is told to wait for the authenticator, in milliseconds
CEREMONY_TIMEOUT_MS = 120_000
#: challenges one browser session may hold open per purpose (older ones are dropped)
OPEN_CHALLENGES = 4
#: passkeys one account may hold
MAX_PASSKEYS = 10
#: longest name of a passkey, and longest credential JSON a browser may post (the body bound is 16 KiB)
MAX_NAME = 40
MAX_CREDENTIAL_JSON = 12_000
REGISTER, SIGNIN = "register", "signin"


class PasskeyRefused(Exception):
    """A ceremony's answer that is not accepted; ``reason`` names why (for the audit, never shown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str
    name: str


@dataclass(frozen=True)
class Passkey:
    handle: str
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    synced: bool


def relying_party(config) -> RelyingParty | None:
    """The RP of this city (the host of ``http.public_url``), or None where browsers would not
    run WebAuthn for it (an IP address; http anywhere but localhost)."""
    parts = urllib.parse.urlsplit(config.public_url)
    host = (parts.hostname or "").rstrip(".")
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    local = host == "localhost" or host.endswith(".localhost")
    if not host or ("." not in host or parts.scheme != "https") and not local:
        return None
    return RelyingParty(host, f"{parts.scheme}://{parts.netloc}", f"{config.city.name}市民邮箱")


def binding_of(cookie_value: str) -> bytes:
    return hashlib.sha256(cookie_value.encode("ascii", "replace")).digest()


def _user_handle(reg: Registry, account_id: int) -> bytes:
    """The WebAuthn user.id of an account: stable (an authenticator keeps one passkey per
    account), opaque (not the address, not the row number)."""
    return reg.keyring.secret_hash("webauthn-user", str(account_id))


def _new_challenge(s, account_id: int, binding: bytes, purpose: str) -> bytes:
    now = utcnow()
    s.execute(delete(WebauthnChallenge).where(WebauthnChallenge.expires_at < now))
    open_ids = list(s.scalars(select(WebauthnChallenge.id).where(
        WebauthnChallenge.binding == binding, WebauthnChallenge.purpose == purpose)
        .order_by(WebauthnChallenge.id.desc())))
    if len(open_ids) >= OPEN_CHALLENGES:
        s.execute(delete(WebauthnChallenge).where(WebauthnChallenge.id.in_(open_ids[OPEN_CHALLENGES - 1:])))
    challenge = secrets.token_bytes(32)
    s.add(WebauthnChallenge(challenge=challenge, binding=binding, account_id=account_id, purpose=purpose,
                            expires_at=now + dt.timedelta(seconds=CHALLENGE_SECONDS)))
    return challenge


def _take_challenge(s, challenge: bytes, account_id: int, binding: bytes, purpose: str) -> bool:
    """Whether CHALLENGE is open for this account, session and purpose; taking it ends it."""
    return s.execute(delete(WebauthnChallenge).where(
        WebauthnChallenge.challenge == challenge, WebauthnChallenge.binding == binding,
        WebauthnChallenge.account_id == account_id, WebauthnChallenge.purpose == purpose,
        WebauthnChallenge.expires_at > utcnow())).rowcount == 1


def _descriptor(row: AccountPasskey) -> PublicKeyCredentialDescriptor:
    transports = []
    for t in row.transports.split():
        try:
            transports.append(AuthenticatorTransport(t))
        except ValueError:
            pass  # a transport newer than the library: the browser finds the key without the hint
    return PublicKeyCredentialDescriptor(id=row.credential_id, transports=transports or None)


def _parse(text: str, parser):
    if not text or len(text) > MAX_CREDENTIAL_JSON:
        raise PasskeyRefused("malformed")
    try:
        credential = parser(text)
        challenge = parse_client_data_json(credential.response.client_data_json).challenge
    except (WebAuthnException, ValueError, KeyError, TypeError, AttributeError):
        raise PasskeyRefused("malformed") from None
    return credential, challenge


# -- the account page ------------------------------------------------------------------------
def list_passkeys(reg: Registry, account_id: int) -> list[Passkey]:
    with reg.store.reader() as s:
        return [Passkey(r.handle, r.name, as_utc(r.created_at), as_utc(r.last_used_at) if r.last_used_at else None,
                        r.synced)
                for r in s.scalars(select(AccountPasskey).where(AccountPasskey.account_id == account_id)
                                   .order_by(AccountPasskey.created_at, AccountPasskey.id))]



def registration_options(reg: Registry, rp: RelyingParty, account_id: int, binding: bytes) -> str:
    """The options of ``navigator.credentials.create()`` (JSON), with a new challenge."""
    with reg.store.session() as s:
        row = s.execute(select(Account.address, Citizen.name).outerjoin(Citizen, Citizen.id == Account.citizen_id)
                        .where(Account.id == account_id)).one()
        existing = list(s.scalars(select(AccountPasskey).where(AccountPasskey.account_id == account_id)))
        if len(existing) >= MAX_PASSKEYS:
            raise PasskeyRefused("too many")
        challenge = _new_challenge(s, account_id, binding, REGISTER)
    options = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_id=_user_handle(reg, account_id), user_name=row.address,
        user_display_name=row.name or row.address, challenge=challenge, timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED, user_verification=UserVerificationRequirement.PREFERRED),
        exclude_credentials=[_descriptor(r) for r in existing])
    return options_to_json(options)


def register(reg: Registry, rp: RelyingParty, account_id: int, address: str, binding: bytes, name: str,
             credential_json: str) -> Passkey:
    """Keep the passkey the browser made with one of this session's registration challenges.
    Raises PasskeyRefused."""
    name = " ".join(name.split())[:MAX_NAME] or "通行密钥"
    credential, challenge = _parse(credential_json, parse_registration_credential_json)
    with reg.store.session() as s:
        taken = _take_challenge(s, challenge, account_id, binding, REGISTER)
    if not taken:
        raise PasskeyRefused("challenge")
    try:
        verified = verify_registration_response(credential=credential, expected_challenge=challenge,
                                                expected_rp_id=rp.id, expected_origin=rp.origin)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise PasskeyRefused("verification") from None
    transports = " ".join(t.value for t in (credential.response.transports or []))[:200]
    handle = secrets.token_urlsafe(12)
    with reg.store.session() as s:
        count = s.scalar(select(func.count()).select_from(AccountPasskey).where(AccountPasskey.account_id == account_id))
        if count >= MAX_PASSKEYS:
            raise PasskeyRefused("too many")
        if s.scalar(select(AccountPasskey.id).where(AccountPasskey.credential_id == verified.credential_id)):
            raise PasskeyRefused("known credential")
        row = AccountPasskey(handle=handle, account_id=account_id, name=name, credential_id=verified.credential_id,
                             public_key=verified.credential_public_key, sign_count=verified.sign_count,
                             transports=transports,
                             synced=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
                             created_at=utcnow())
        s.add(row)
        audit.record(s, "account.passkey-add", f"{address} name={name}", actor=address)
        return Passkey(handle, name, row.created_at, None, row.synced)


def remove_all(reg: Registry, address: str, actor: str = "operator") -> int:
    """Remove every passkey of the account at ADDRESS (an operator's, for a citizen who lost the
    device and cannot sign in to remove it): how many there were."""
    with reg.store.session() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == normalise_address(address)))
        if account_id is None:
            raise NotFound(f"no account {address}")
        removed = s.execute(delete(AccountPasskey).where(AccountPasskey.account_id == account_id)).rowcount
        if removed:
            audit.record(s, "account.passkey-remove", f"{normalise_address(address)} all ({removed})", actor=actor)
        return removed


def has_passkeys(reg: Registry, account_id: int) -> bool:
    """Whether the account has a passkey."""
    with reg.store.reader() as s:
        return s.scalar(select(AccountPasskey.id).where(AccountPasskey.account_id == account_id).limit(1)) is not None


def account_passkeys(reg: Registry, address: str) -> list[Passkey]:
    with reg.store.reader() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == normalise_address(address)))
    if account_id is None:
        raise NotFound(f"no account {address}")
    return list_passkeys(reg, account_id)


def remove(reg: Registry, account_id: int, address: str, handle: str) -> bool:
    """Remove one of the account's passkeys; False if it has none with this handle."""
    with reg.store.session() as s:
        row = s.scalar(select(AccountPasskey).where(AccountPasskey.account_id == account_id,
                                                    AccountPasskey.handle == handle))
        if row is None:
            return False
        audit.record(s, "account.passkey-remove", f"{address} name={row.name}", actor=address)
        s.delete(row)
        return True


# -- the sign-in's second step ---------------------------------------------------------------
def signin_options(reg: Registry, rp: RelyingParty, account_id: int, binding: bytes) -> str | None:
    """The options of ``navigator.credentials.get()`` (JSON) for the account's passkeys, with a
    new challenge; None if the account has none."""
    with reg.store.session() as s:
        rows = list(s.scalars(select(AccountPasskey).where(AccountPasskey.account_id == account_id)))
        if not rows:
            return None
        challenge = _new_challenge(s, account_id, binding, SIGNIN)
    return options_to_json(generate_authentication_options(
        rp_id=rp.id, challenge=challenge, timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=[_descriptor(r) for r in rows], user_verification=UserVerificationRequirement.PREFERRED))


def authenticate(reg: Registry, rp: RelyingParty, account_id: int, address: str, binding: bytes,
                 credential_json: str) -> str:
    """Check an assertion made for one of this session's sign-in challenges with one of this
    account's passkeys: the amr value it earns ("hwk", or "swk" for a synced passkey). A sign
    count that does not grow (when the authenticator counts) is a cloned authenticator: refused
    and audited. Raises PasskeyRefused."""
    credential, challenge = _parse(credential_json, parse_authentication_credential_json)
    with reg.store.session() as s:
        taken = _take_challenge(s, challenge, account_id, binding, SIGNIN)
    if not taken:
        raise PasskeyRefused("challenge")
    with reg.store.reader() as s:
        row = s.scalar(select(AccountPasskey).where(AccountPasskey.credential_id == credential.raw_id,
                                                    AccountPasskey.account_id == account_id))
        if row is None:  # removed, never registered, or another account's
            raise PasskeyRefused("unknown credential")
        passkey_id, public_key, count, name = row.id, row.public_key, row.sign_count, row.name
    try:
        reported = parse_authenticator_data(credential.response.authenticator_data).sign_count
    except (WebAuthnException, ValueError, IndexError):
        raise PasskeyRefused("malformed") from None
    # a counter that does not grow is told apart only once the signature is good (the library
    # would refuse it before looking at the signature: anyone could then fake the alarm)
    stale = bool(reported or count) and reported <= count
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin,
            credential_public_key=public_key, credential_current_sign_count=0 if stale else count)
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise PasskeyRefused("verification") from None
    if stale:
        with reg.store.session() as s:
            audit.record(s, "account.passkey-clone-suspected",
                         f"{address} name={name} sign_count={reported} known={count}", actor=address)
        raise PasskeyRefused("sign count")
    with reg.store.session() as s:
        # compare-and-set: two assertions with one count (a replay racing the original) win once
        taken = s.execute(update(AccountPasskey).where(AccountPasskey.id == passkey_id,
                                                       AccountPasskey.sign_count == count)
                          .values(sign_count=verified.new_sign_count, last_used_at=utcnow(),
                                  synced=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE))
        if taken.rowcount != 1:
            raise PasskeyRefused("sign count")
    return "swk" if verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE else "hwk"

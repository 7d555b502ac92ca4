"""The web face's sessions and the OpenID Connect provider: registered city websites (clients),
the citizens' remembered consents, authorization codes, and access / refresh tokens.

Secrets are never stored: a session id, a code, a token or a client secret is kept as its
SHA-256 (the value itself is 256 random bits, so a plain hash is enough and lookups stay one
index probe)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class WebSession(Base):
    """A browser signed in as an account (issue 14 section 1, reused by the portal)."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: SHA-256 of the cookie's random value
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: an opaque handle naming the session in the account's list (never the cookie value)
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: when the password was last checked in this session (OIDC auth_time, max_age)
    auth_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: the client as it signed in: shown in the list of sessions
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))
    #: how the sign-in was made, RFC 8176 values space-separated ("pwd", "pwd otp mfa", "pwd hwk mfa"):
    #: the ID tokens issued from this session carry it as ``amr``
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")

    __table_args__ = (Index("ix_web_session_account", "account_id", "created_at"),)


class OidcClient(Base):
    """A city website (a relying party) registered by an operator (`civicmail oidc client add`)."""

    __tablename__ = "oidc_client"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the client secret; NULL for a public client (PKCE with S256 required)
    secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    #: the exact redirect URIs, one per line
    redirect_uris: Mapped[str] = mapped_column(Text)
    #: the scopes it may ask for, space-separated (openid profile email mail)
    scopes: Mapped[str] = mapped_column(Text)
    #: extra claims granted to it, space-separated (id_number_masked)
    claims: Mapped[str] = mapped_column(Text, default="")
    #: registered by civicmail itself (the portal): `client remove` refuses it
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OidcConsent(Base):
    """What a citizen agreed a website may learn, remembered so it is asked once."""

    __tablename__ = "oidc_consent"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oidc_client.id", ondelete="CASCADE"), primary_key=True)
    #: scopes and extra claims agreed to, space-separated
    scopes: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OidcCode(Base):
    """An authorization code: one use, a minute of life (oidc.code_ttl)."""

    __tablename__ = "oidc_code"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oidc_client.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(String(255))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    auth_time: Mapped[dt.datetime]
    #: the session's ``amr`` (WebSession.amr) when the code was issued: the ID token's
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")
    expires_at: Mapped[dt.datetime]
    #: set when exchanged: a second use is refused and revokes what the first one got
    used_at: Mapped[dt.datetime | None]


class OidcToken(Base):
    """An access token and its refresh token. Refreshing revokes the pair and issues a new one
    (rotation); using a rotated refresh token again revokes the whole family."""

    __tablename__ = "oidc_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    access_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    refresh_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oidc_client.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    #: the code (or, for a refreshed pair, the first pair's code) this family descends from
    family: Mapped[str] = mapped_column(String(32), index=True)
    auth_time: Mapped[dt.datetime]
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    access_expires_at: Mapped[dt.datetime]
    refresh_expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class AccountTotp(Base):
    """A citizen's second factor for the web sign-in: a TOTP secret (RFC 6238), encrypted."""

    __tablename__ = "account_totp"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    #: AES-GCM of the base32 secret, under a key derived from the (never rotated) MAC key
    secret_cipher: Mapped[bytes] = mapped_column(LargeBinary(128))
    #: the last 30-second step a code was accepted for: a code is good once (RFC 6238 5.2)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccountPasskey(Base):
    """A citizen's passkey (a WebAuthn credential, issue 14 section 1): the web sign-in's second
    factor, like TOTP. Only public material is kept: the authenticator holds the private key."""

    __tablename__ = "account_passkey"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: an opaque handle naming the passkey in the account page's forms (never the row number)
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    #: what the citizen called it ("我的手机")
    name: Mapped[str] = mapped_column(String(64))
    #: the credential ID the authenticator chose (WebAuthn: at most 1023 bytes)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    #: the COSE public key, as the attestation carried it
    public_key: Mapped[bytes] = mapped_column(LargeBinary(2048))
    #: the authenticator's signature counter at the last use; a counter that does not grow is a
    #: cloned authenticator and refused (0 forever: an authenticator that keeps no counter)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    #: how the browser reaches it (internal, usb, nfc, ble, hybrid), space-separated
    transports: Mapped[str] = mapped_column(String(200), default="")
    #: a synced (multi-device, backed-up) passkey: ``swk`` in amr, else ``hwk``
    synced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]


class WebauthnChallenge(Base):
    """A WebAuthn ceremony's challenge: used once (deleted when taken), valid minutes, and only
    from the browser session it was made for (``binding``: SHA-256 of that session's cookie)."""

    __tablename__ = "webauthn_challenge"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64), unique=True)
    binding: Mapped[bytes] = mapped_column(LargeBinary(32))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    #: "register" (the account page) or "signin" (the provider's second step)
    purpose: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    __table_args__ = (Index("ix_webauthn_challenge_binding", "binding", "purpose"),)

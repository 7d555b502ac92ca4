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

"""The real-name registry: citizens, their accounts, agencies and what they may send."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, BigId, utcnow


class Citizen(Base):
    __tablename__ = "citizen"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    #: HMAC-SHA256 of the normalised ID number: the only way the store looks a number up
    id_index: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: AES-GCM ciphertext of the ID number, prefixed with its key version
    id_cipher: Mapped[bytes] = mapped_column(LargeBinary(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    account: Mapped["Account"] = relationship(back_populates="citizen", uselist=False)


class Account(Base):
    """A mailbox login. A citizen has exactly one; an agency may have one for its application mail."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizen.id"), unique=True)
    agency_id: Mapped[str | None] = mapped_column(ForeignKey("agency.id"))
    #: argon2id hash; NULL until the account is activated
    password_hash: Mapped[str | None] = mapped_column(String(128))
    #: HMAC of the one-time activation code given to an account created in bulk
    activation_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    activation_expires: Mapped[dt.datetime | None]
    #: pending (awaiting activation), active, disabled
    state: Mapped[str] = mapped_column(String(16), default="active")
    #: bytes; NULL means the configured default
    quota_bytes: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]

    citizen: Mapped[Citizen | None] = relationship(back_populates="account")

    __table_args__ = (Index("ix_account_agency_id", "agency_id"),)


class LoginDay(Base):
    """A day on which an account logged in over IMAP: 'active users' for any period, this year's
    and the same days a year before (``last_login_at`` only knows the latest)."""

    __tablename__ = "login_day"

    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("account.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)

    __table_args__ = (Index("ix_login_day_day", "day", "account_id"),)


class AddressCounter(Base):
    """Next free number for an address derived from a name (zhang.wei, zhang.wei2, ...)."""

    __tablename__ = "address_counter"

    base: Mapped[str] = mapped_column(String(200), primary_key=True)
    last: Mapped[int] = mapped_column(default=1)


class Agency(Base):
    __tablename__ = "agency"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AgencySender(Base):
    """An address an agency may use as envelope sender and From:."""

    __tablename__ = "agency_sender"

    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)


class AgencyCredential(Base):
    """A password an agency's systems log in with (over SMTP submission, as the agency id)."""

    __tablename__ = "agency_credential"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class NoticeType(Base):
    """A kind of notice (templates/<id>/); loaded from the templates on init and upgrade."""

    __tablename__ = "notice_type"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    mandatory: Mapped[bool] = mapped_column(Boolean, default=True)
    title: Mapped[str] = mapped_column(String(200))


class AgencyGrant(Base):
    __tablename__ = "agency_grant"

    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), primary_key=True)
    notice_type_id: Mapped[str] = mapped_column(ForeignKey("notice_type.id"), primary_key=True)


class AuditLog(Base):
    """What operators and agencies did, and who looked at personal data. Never holds an ID
    number or message content. Append-only: the database refuses UPDATE and DELETE (migration
    0010); rows are written through registry/audit.py."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    #: who in civicmail's terms: "operator", "init --demo", the account that activated itself
    actor: Mapped[str] = mapped_column(String(254))
    #: what was done: the command (``citizen show``) or the operation (``account.disable``)
    action: Mapped[str] = mapped_column(String(64))
    #: what it was done to: an address, a drop, an agency (an ID number never, only masked)
    detail: Mapped[str | None] = mapped_column(Text)
    #: the operating-system user of the process that wrote the row
    os_user: Mapped[str | None] = mapped_column(String(64))
    #: why, as the operator gave it (``--reason``)
    reason: Mapped[str | None] = mapped_column(Text)


class IssuedCertificate(Base):
    """A certificate the city CA issued (``civicmail ca issue``): to an agency (S/MIME signing)
    or to a citizen's mailbox (S/MIME and certificate login). The DER is kept, so a client
    certificate is recognised by its fingerprint, and the CRL lists the revoked serials."""

    __tablename__ = "issued_certificate"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: the serial number, lowercase hex
    serial: Mapped[str] = mapped_column(String(42), unique=True)
    #: SHA-256 of the DER
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: "agency" or "citizen"
    kind: Mapped[str] = mapped_column(String(16))
    #: the agency id, or the mailbox address (never an ID number)
    subject: Mapped[str] = mapped_column(String(254), index=True)
    #: the address in the certificate's subjectAltName
    address: Mapped[str] = mapped_column(String(254))
    key_type: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    #: an RFC 5280 CRLReason name (keyCompromise, superseded, ...)
    revocation_reason: Mapped[str | None] = mapped_column(String(32))

"""The city CA's register: which certificates it issued, to whom, and which are revoked.

The keys and certificates themselves are made by ``identity/ca.py``; every issue and revocation
is recorded here with an audit row in the same transaction. The store is what the CRL, the
certificate login (AUTHENTICATE EXTERNAL) and ``ca list`` read.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from ..errors import AuthenticationFailed, Conflict, NotFound, UserError
from ..identity.addresses import normalise_login
from ..identity.sasl import AuthorizationRefused
from ..identity.ca import REASONS, CityCA, Issued, crl_url, fingerprint, serial_hex
from ..store.models import Account, Agency, AgencySender, IssuedCertificate, as_utc
from . import audit
from .auth import Principal
from .context import Registry


@dataclass(frozen=True)
class CertificateView:
    serial: str
    kind: str
    subject: str
    address: str
    key_type: str
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None


def _view(row: IssuedCertificate) -> CertificateView:
    return CertificateView(row.serial, row.kind, row.subject, row.address, row.key_type, as_utc(row.not_after),
                           as_utc(row.revoked_at) if row.revoked_at else None, row.revocation_reason)


def city_ca(reg: Registry) -> CityCA:
    return CityCA.from_config(reg.config)


def init_ca(reg: Registry, actor: str = "operator") -> CityCA:
    """Make the city's root (in ca.root_dir) and issuing CA (in ca.dir); audited."""
    config = reg.config
    ca = CityCA.create(config.data_path(config.ca.dir), config.data_path(config.ca.root_dir), config.city.name,
                       config.city.domain, crl_url(config))
    with reg.store.session() as s:
        audit.record(s, "ca.init", f"root {serial_hex(ca.root)}, issuing {serial_hex(ca.cert)}", actor=actor)
    return ca


def _record(s, issued: Issued, actor: str) -> None:
    cert = issued.cert
    s.add(IssuedCertificate(serial=issued.serial, fingerprint=fingerprint(issued.der), kind=issued.kind,
                            subject=issued.subject, address=issued.address, key_type=issued.key_type,
                            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                            der=issued.der))
    audit.record(s, f"ca.issue.{issued.kind}", f"{issued.subject} serial {issued.serial}", actor=actor)


def issue_agency(reg: Registry, agency_id: str, actor: str = "operator") -> Issued:
    """The agency's signing certificate, for its first sender address. An earlier one stays valid
    until it expires or is revoked (mail it signed stays verifiable); the pipeline signs with the
    newest."""
    ca = city_ca(reg)
    with reg.store.session() as s:
        agency = s.get(Agency, agency_id)
        if agency is None:
            raise NotFound(f"no agency {agency_id}")
        # every address it may send from, its mailbox first (the From of its notices: runner.agency_info)
        senders = list(s.scalars(select(AgencySender.address).where(AgencySender.agency_id == agency_id)
                                 .order_by(AgencySender.address)))
        mailbox = s.scalar(select(Account.address).where(Account.agency_id == agency_id).order_by(Account.id))
        addresses = ([mailbox] if mailbox else []) + [a for a in senders if a != mailbox]
        if not addresses:
            raise UserError(f"agency {agency_id} has no sender address")
        issued = ca.issue_agency(agency_id, agency.name, addresses, reg.config.ca.agency_key_type,
                                 reg.config.ca.agency_days)
        _record(s, issued, actor)
    ca.install_agency(issued)  # once recorded: a certificate in use is always one `ca revoke` knows
    return issued


def issue_citizen(reg: Registry, address: str, actor: str = "operator") -> tuple[Issued, bytes, str]:
    """A citizen's personal certificate as PKCS#12 with its one-time password."""
    ca = city_ca(reg)
    with reg.store.session() as s:
        account = s.scalar(select(Account).where(Account.address == address.strip().lower()))
        if account is None or account.citizen is None:
            raise NotFound(f"no citizen's mailbox {address}")
        if account.state == "disabled":
            raise UserError(f"{account.address} is disabled")
        issued, p12, password = ca.issue_citizen(account.citizen.name, account.address,
                                                 reg.config.ca.citizen_key_type, reg.config.ca.citizen_days)
        _record(s, issued, actor)
    return issued, p12, password


def revoke(reg: Registry, serial: str, reason: str = "unspecified", actor: str = "operator") -> CertificateView:
    if reason not in REASONS:
        raise UserError(f"reason {reason!r}: one of {', '.join(REASONS)}")
    serial = serial.strip().lower().removeprefix("0x").replace(":", "").lstrip("0") or "0"
    with reg.store.session() as s:
        row = s.scalar(select(IssuedCertificate).where(IssuedCertificate.serial == serial))
        if row is None:
            raise NotFound(f"no certificate with serial {serial}")
        if row.revoked_at is not None:
            raise Conflict(f"certificate {serial} was revoked already")
        row.revoked_at = dt.datetime.now(dt.timezone.utc)
        row.revocation_reason = reason
        audit.record(s, "ca.revoke", f"{row.subject} serial {serial} ({reason})", actor=actor)
        s.flush()
        return _view(row)


def list_certificates(reg: Registry, subject: str | None = None) -> list[CertificateView]:
    q = select(IssuedCertificate).order_by(IssuedCertificate.id)
    if subject:
        q = q.where(IssuedCertificate.subject == subject.strip().lower())
    with reg.store.reader() as s:
        return [_view(r) for r in s.scalars(q)]


def revoked(reg: Registry) -> list[tuple[str, dt.datetime, str | None]]:
    """(serial, revoked at, reason) of every revoked certificate still within its validity
    (an expired one need not stay on the CRL, RFC 5280 3.3), for the CRL."""
    now = dt.datetime.now(dt.timezone.utc)
    q = (select(IssuedCertificate.serial, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason)
         .where(IssuedCertificate.revoked_at.is_not(None), IssuedCertificate.not_after > now)
         .order_by(IssuedCertificate.id))
    with reg.store.reader() as s:
        return [(serial, as_utc(at), reason) for serial, at, reason in s.execute(q)]


def _valid_citizen_row(s, der: bytes) -> IssuedCertificate | None:
    """The register's row of exactly this certificate, if the city issued it to a citizen and it
    is within its validity and not revoked."""
    now = dt.datetime.now(dt.timezone.utc)
    row = s.scalar(select(IssuedCertificate).where(IssuedCertificate.fingerprint == fingerprint(der)))
    if row is None or row.kind != "citizen" or row.revoked_at is not None \
            or not as_utc(row.not_before) <= now < as_utc(row.not_after):
        return None
    return row


def citizen_signer(session, der: bytes) -> tuple[str, str] | None:
    """(mailbox address, serial) of a citizen's certificate that signed a message, if the city
    issued it and it is valid and not revoked now; None otherwise (signed applications)."""
    row = _valid_citizen_row(session, der)
    return None if row is None else (row.address, row.serial)


def certificate_principal(reg: Registry, der: bytes, authzid: str = "") -> Principal:
    """Who a client certificate logs in as (AUTHENTICATE EXTERNAL, RFC 4422 appendix A): the
    mailbox the city CA issued exactly this certificate to, if it is within its validity, not
    revoked, and the account is active; ``authzid``, if given, must name that mailbox (acting for
    another is not offered). AuthenticationFailed otherwise. TLS has checked the chain up to the
    city root and the client's possession of the key."""
    with reg.store.reader() as s:
        row = _valid_citizen_row(s, der)
        if row is None:
            raise AuthenticationFailed("certificate not valid for login")
        if authzid and normalise_login(authzid) != row.address:
            raise AuthorizationRefused("authorization identity differs from the certificate's mailbox")
        account = s.scalar(select(Account).where(Account.address == row.address))
        if account is None or account.state != "active" or account.agency_id is not None:
            raise AuthenticationFailed("no active mailbox for the certificate")
        return Principal("citizen", account.address, account.id, account.address)

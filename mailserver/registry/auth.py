"""Who is logging in: one check for SMTP submission and IMAP alike.

Citizens log in with their full address; agencies with their agency id (their systems, over
submission) or with their mailbox address (their clerks, over IMAP). Blocking (argon2 costs
tens of milliseconds by design): protocol edges call it in a thread executor.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update

from ..errors import AuthenticationFailed
from ..identity.addresses import normalise_address, normalise_login
from ..store.driver import driver_rows, raw_reader
from ..store.models import Account, Agency, AgencyCredential, AgencyGrant, AgencySender, LoginDay
from .context import Registry


@dataclass(frozen=True)
class Principal:
    """An authenticated identity and what it may do."""

    kind: str  # "citizen" or "agency"
    login: str
    #: the mailbox this identity reads (None for an agency without one)
    account_id: int | None
    address: str | None
    agency_id: str | None = None
    #: addresses an agency may send from; a citizen sends from ``address`` only
    senders: frozenset[str] = frozenset()
    #: notice types an agency is granted
    grants: frozenset[str] = frozenset()

    @property
    def is_agency(self) -> bool:
        return self.kind == "agency"

    def may_send_from(self, address: str) -> bool:
        address = normalise_address(address)
        if self.is_agency:
            return address in self.senders
        return address == (self.address or "")


def _agency_principal(session, agency: Agency, login: str) -> Principal:
    senders = frozenset(session.scalars(select(AgencySender.address).where(AgencySender.agency_id == agency.id)))
    grants = frozenset(session.scalars(select(AgencyGrant.notice_type_id).where(AgencyGrant.agency_id == agency.id)))
    mailbox = session.execute(select(Account.id, Account.address).where(Account.agency_id == agency.id)).first()
    return Principal("agency", login, mailbox[0] if mailbox else None, mailbox[1] if mailbox else None,
                     agency.id, senders, grants)


def authenticate(reg: Registry, login: str, password: str) -> Principal:
    """Return the principal, or raise AuthenticationFailed (the reason is never told). The login
    is looked up in the form the login throttle counts (``normalise_login``)."""
    login = normalise_login(login)
    if "@" in login:
        # The common case (every IMAP and submission login of a citizen): one plain query, and
        # the hash checked after the connection went back to the pool (argon2 takes milliseconds).
        with raw_reader(reg.store) as r:
            row = next(iter(driver_rows(
                r, "SELECT id, address, password_hash, state, agency_id FROM account WHERE address = ?", login)), None)
        ok = reg.passwords.check_login(login, row[2] if row else None, password)
        if not ok or row is None or row[3] != "active":
            raise AuthenticationFailed("authentication failed")
        if not row[4]:
            return Principal("citizen", login, row[0], row[1])
    with reg.store.reader() as s:
        if "@" in login:  # an agency's mailbox, its password checked above
            agency = s.get(Agency, row[4])
            if agency is None or not agency.enabled:
                raise AuthenticationFailed("authentication failed")
            return _agency_principal(s, agency, login)
        agency = s.get(Agency, login)
        hashes = []
        if agency is not None and agency.enabled:
            hashes = list(s.scalars(select(AgencyCredential.password_hash).where(
                AgencyCredential.agency_id == agency.id, AgencyCredential.revoked_at.is_(None))))
        if not any(reg.passwords.check_login(login, h, password) for h in hashes or [None]) or agency is None:
            raise AuthenticationFailed("authentication failed")
        return _agency_principal(s, agency, login)


def record_login(reg: Registry, account_id: int) -> None:
    """Note an IMAP login: the account's last login time and the day (the 'active users' figure)."""
    now = dt.datetime.now(dt.timezone.utc)
    if reg.store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    with reg.store.session() as s:
        s.execute(update(Account).where(Account.id == account_id).values(last_login_at=now))
        s.execute(upsert(LoginDay).values(account_id=account_id, day=now.date()).on_conflict_do_nothing())

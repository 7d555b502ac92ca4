"""Agencies: who they are, the addresses they send from, their credentials and grants."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import Conflict, NotFound, ValidationError
from ..identity import addresses
from ..store.models import Account, Agency, AgencyCredential, AgencyGrant, AgencySender, NoticeType
from . import audit
from .context import Registry
from .folders import create_default_folders

AGENCY_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")


@dataclass(frozen=True)
class AgencyView:
    id: str
    name: str
    enabled: bool
    senders: tuple[str, ...]
    grants: tuple[str, ...]
    mailbox: str | None


def add_agency(reg: Registry, agency_id: str, name: str, senders: list[str], password: str | None = None,
               actor: str = "operator") -> AgencyView:
    """Register an agency with its sender addresses. Its first sender is also its mailbox
    (an account it reads over IMAP, where citizens' applications arrive)."""
    if not AGENCY_ID.match(agency_id):
        raise ValidationError(f"agency id {agency_id!r}: lower-case letters, digits and '-', starting with a letter")
    if not name.strip():
        raise ValidationError("agency name is empty")
    if not senders:
        raise ValidationError("an agency needs at least one --sender address")
    normalized = [addresses.normalize_address(a, reg.domain) for a in senders]
    hashed = reg.passwords.hash(password) if password is not None else None
    with reg.store.session() as s:
        if s.get(Agency, agency_id) is not None:
            raise Conflict(f"agency {agency_id} exists")
        for address in normalized:
            if s.get(AgencySender, address) is not None or s.scalar(select(Account.id).where(Account.address == address)):
                raise Conflict(f"{address} is already in use")
        s.add(Agency(id=agency_id, name=name.strip()))
        s.flush()
        for address in normalized:
            s.add(AgencySender(address=address, agency_id=agency_id))
        mailbox = None
        if normalized[0].rpartition("@")[2] in reg.config.local_domains:
            account = Account(address=normalized[0], agency_id=agency_id, state="active", password_hash=hashed)
            s.add(account)
            s.flush()
            create_default_folders(s, [account.id])
            mailbox = account.address
        if hashed is not None:
            s.add(AgencyCredential(agency_id=agency_id, password_hash=hashed))
        audit.record(s, "agency.add", agency_id, actor=actor)
    return AgencyView(agency_id, name.strip(), True, tuple(normalized), (), mailbox)


def set_agency_password(reg: Registry, agency_id: str, password: str, actor: str = "operator") -> None:
    """A new credential for the agency's systems; earlier ones are revoked."""
    hashed = reg.passwords.hash(password)
    with reg.store.session() as s:
        if s.get(Agency, agency_id) is None:
            raise NotFound(f"no agency {agency_id}")
        now = dt.datetime.now(dt.timezone.utc)
        for cred in s.scalars(select(AgencyCredential).where(AgencyCredential.agency_id == agency_id,
                                                              AgencyCredential.revoked_at.is_(None))):
            cred.revoked_at = now
        s.add(AgencyCredential(agency_id=agency_id, password_hash=hashed))
        for account in s.scalars(select(Account).where(Account.agency_id == agency_id)):
            account.password_hash = hashed
        audit.record(s, "agency.passwd", agency_id, actor=actor)


def grant(reg: Registry, agency_id: str, notice_types: list[str], actor: str = "operator") -> list[str]:
    with reg.store.session() as s:
        if s.get(Agency, agency_id) is None:
            raise NotFound(f"no agency {agency_id}")
        added = []
        for nt in notice_types:
            if s.get(NoticeType, nt) is None:
                known = ", ".join(s.scalars(select(NoticeType.id).order_by(NoticeType.id))) or "none loaded"
                raise NotFound(f"no notice type {nt} (known: {known})")
            if s.get(AgencyGrant, (agency_id, nt)) is None:
                s.add(AgencyGrant(agency_id=agency_id, notice_type_id=nt))
                added.append(nt)
        audit.record(s, "agency.grant", f"{agency_id}: {' '.join(notice_types)}", actor=actor)
    return added


def list_agencies(reg: Registry) -> list[AgencyView]:
    with reg.store.reader() as s:
        out = []
        for agency in s.scalars(select(Agency).order_by(Agency.id)):
            senders = tuple(s.scalars(select(AgencySender.address).where(AgencySender.agency_id == agency.id)
                                      .order_by(AgencySender.address)))
            grants = tuple(s.scalars(select(AgencyGrant.notice_type_id).where(AgencyGrant.agency_id == agency.id)
                                     .order_by(AgencyGrant.notice_type_id)))
            mailbox = s.scalar(select(Account.address).where(Account.agency_id == agency.id))
            out.append(AgencyView(agency.id, agency.name, agency.enabled, senders, grants, mailbox))
        return out


def sync_notice_types(reg: Registry, definitions: list[dict]) -> int:
    """Upsert notice types from their definitions (``templates/<id>/``): id, agency, kind,
    mandatory, title. Returns how many there are."""
    rows = [{"id": d["id"], "agency_id": d.get("agency"), "kind": d["kind"], "mandatory": bool(d["mandatory"]),
             "title": d["title"]} for d in definitions]
    if not rows:
        return 0
    with reg.store.session() as s:
        dialect_insert = pg_insert if reg.store.dialect == "postgresql" else sqlite_insert
        stmt = dialect_insert(NoticeType)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"agency_id": stmt.excluded.agency_id, "kind": stmt.excluded.kind,
                  "mandatory": stmt.excluded.mandatory, "title": stmt.excluded.title},
        )
        s.execute(stmt, rows)
    return len(rows)

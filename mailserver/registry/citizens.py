"""Citizens: register one (with exactly one account), look up, disable, set passwords, activate."""
from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import AuthenticationFailed, Conflict, NotFound, ValidationError
from ..identity import addresses, idnumber
from ..identity.passwords import activation_code, normalize_code
from ..store.models import Account, AddressCounter, Citizen, Message, as_utc
from . import audit
from .context import Registry
from .folders import create_default_folders

ACTIVATION = "activation"


@dataclass(frozen=True)
class CitizenView:
    """What `citizen show` prints: the ID number only masked."""

    name: str
    id_masked: str
    phone: str | None
    address: str
    state: str
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    messages: int
    bytes_used: int


@dataclass(frozen=True)
class NewCitizen:
    address: str
    activation_code: str | None
    activation_expires: dt.datetime | None


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("name is empty")
    if len(name) > 64:
        raise ValidationError("name is longer than 64 characters")
    return name


def check_phone(phone: str | None) -> str | None:
    if phone is None or not phone.strip():
        return None
    phone = phone.strip()
    if not all(c.isdigit() or c in "+- " for c in phone) or len(phone) > 32:
        raise ValidationError("phone: only digits, spaces, '+' and '-'")
    return phone


def assign_addresses(session: Session, domain: str, bases: Iterable[str]) -> list[str]:
    """Give each base (a local part derived from a name) its next free numbered address.

    Takes the counters of all bases in one query, so that a batch of thousands costs a few
    statements; explicit addresses an operator chose earlier are stepped over.
    """
    wanted = list(bases)
    distinct = sorted(set(wanted))
    counters = {
        row.base: row.last
        for row in session.execute(select(AddressCounter).where(AddressCounter.base.in_(distinct))).scalars()
    }
    fresh = {b for b in distinct if b not in counters}
    out: list[str] = []
    taken: set[str] = set()
    for base in wanted:
        n = counters.get(base, 0) + 1
        counters[base] = n
        out.append(f"{addresses.numbered(base, n)}@{domain}")
    # Step over addresses already in use (chosen by an operator); rare, so checked per batch.
    while True:
        clash = set(session.execute(select(Account.address).where(Account.address.in_(out))).scalars()) | taken
        dupes = [i for i, a in enumerate(out) if a in clash]
        if not dupes:
            break
        for i in dupes:
            base = wanted[i]
            counters[base] += 1
            taken.add(out[i])
            out[i] = f"{addresses.numbered(base, counters[base])}@{domain}"
    if fresh:
        session.execute(AddressCounter.__table__.insert(), [{"base": b, "last": counters[b]} for b in sorted(fresh)])
    known = sorted(set(distinct) - fresh)
    if known:
        t = AddressCounter.__table__
        session.execute(t.update().where(t.c.base == bindparam("b")).values(last=bindparam("n")),
                        [{"b": b, "n": counters[b]} for b in known])
    return out


def add_citizen(
    reg: Registry,
    name: str,
    id_number: str,
    phone: str | None = None,
    address: str | None = None,
    password: str | None = None,
    actor: str = "operator",
) -> NewCitizen:
    """Register a citizen and open their account. Without a password the account waits for
    activation with a one-time code (returned once, stored only as a keyed hash)."""
    name = check_name(name)
    number = idnumber.normalize(id_number)
    phone = check_phone(phone)
    password_hash = reg.passwords.hash(password) if password is not None else None
    ring = reg.keyring
    index = ring.index(number)
    with reg.store.session() as s:
        if s.scalar(select(Citizen.id).where(Citizen.id_index == index)) is not None:
            raise Conflict("a citizen with this ID number is already registered")
        if address:
            address = addresses.normalize_address(address, reg.domain)
            if address.rpartition("@")[2] not in reg.config.local_domains:
                raise ValidationError(f"{address}: not one of this city's domains")
            if s.scalar(select(Account.id).where(Account.address == address)) is not None:
                raise Conflict(f"{address} is already taken")
        else:
            address = assign_addresses(s, reg.domain, [addresses.base_local_part(name)])[0]
        citizen = Citizen(name=name, id_index=index, id_cipher=ring.encrypt(number), phone=phone)
        s.add(citizen)
        s.flush()
        code = expires = None
        account = Account(address=address, citizen_id=citizen.id, state="active" if password_hash else "pending",
                          password_hash=password_hash)
        if password_hash is None:
            code = activation_code()
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=reg.config.passwords.activation_ttl)
            account.activation_hash = ring.secret_hash(ACTIVATION, normalize_code(code))
            account.activation_expires = expires
        s.add(account)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"{address} is already taken, or the ID number is already registered") from None
        create_default_folders(s, [account.id])
        audit.record(s, "citizen.add", address, actor=actor)
    return NewCitizen(address, code, expires)


def find_account(session: Session, address: str) -> Account:
    account = session.scalar(select(Account).where(Account.address == address.strip().lower()))
    if account is None:
        raise NotFound(f"no account {address}")
    return account


def find_citizen_by_id_number(reg: Registry, session: Session, id_number: str) -> Citizen:
    index = reg.keyring.index(idnumber.normalize(id_number))
    citizen = session.scalar(select(Citizen).where(Citizen.id_index == index))
    if citizen is None:
        raise NotFound("no citizen with this ID number")
    return citizen


def show_citizen(reg: Registry, who: str) -> CitizenView:
    """``who`` is a mailbox address or an ID number."""
    with reg.store.reader() as s:
        if "@" in who:
            account = find_account(s, who)
            citizen = s.get(Citizen, account.citizen_id) if account.citizen_id else None
            if citizen is None:
                raise NotFound(f"{who} is not a citizen's account")
        else:
            citizen = find_citizen_by_id_number(reg, s, who)
            account = s.scalar(select(Account).where(Account.citizen_id == citizen.id))
        count, used = s.execute(
            select(func.count(Message.id), func.coalesce(func.sum(Message.size), 0))
            .where(Message.account_id == account.id)
        ).one()
        return CitizenView(
            name=citizen.name,
            id_masked=idnumber.mask(reg.keyring.decrypt(citizen.id_cipher)),
            phone=citizen.phone,
            address=account.address,
            state=account.state,
            created_at=citizen.created_at,
            last_login_at=account.last_login_at,
            messages=count,
            bytes_used=used,
        )


def disable_account(reg: Registry, address: str, actor: str = "operator") -> None:
    with reg.store.session() as s:
        account = find_account(s, address)
        account.state = "disabled"
        audit.record(s, "account.disable", account.address, actor=actor)


def set_password(reg: Registry, address: str, password: str, actor: str = "operator") -> None:
    hashed = reg.passwords.hash(password)
    with reg.store.session() as s:
        account = find_account(s, address)
        if account.state == "disabled":
            raise ValidationError(f"{account.address} is disabled")
        account.password_hash = hashed
        account.state = "active"
        account.activation_hash = None
        account.activation_expires = None
        audit.record(s, "account.passwd", account.address, actor=actor)


def activate(reg: Registry, address: str, code: str, password: str) -> None:
    """Set the first password from the one-time code that came by letter."""
    hashed = reg.passwords.hash(password)
    offered = reg.keyring.secret_hash(ACTIVATION, normalize_code(code))
    with reg.store.session() as s:
        account = find_account(s, address)
        now = dt.datetime.now(dt.timezone.utc)
        expires = None if account.activation_expires is None else as_utc(account.activation_expires)
        if (
            account.state != "pending"
            or account.activation_hash is None
            or not hmac.compare_digest(account.activation_hash, offered)
            or (expires is not None and expires < now)
        ):
            raise AuthenticationFailed("activation code wrong, used or expired")
        account.password_hash = hashed
        account.state = "active"
        account.activation_hash = None
        account.activation_expires = None
        audit.record(s, "account.activate", account.address, actor=account.address)

"""Local address resolution with sub-addressing (RFC 5233): ``local+detail@domain``.

An exact match wins (an account may be called ``a+b@...``); otherwise the ``+detail`` is
stripped and the base address looked up. SMTP may call this for RCPT TO so that
``topic+subscribe@domain`` reaches the topic's account; the services worker uses
``split_detail`` to learn what was asked for.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Account

DETAIL_SEPARATOR = "+"


def split_detail(address: str) -> tuple[str, str]:
    """(base address, detail) of a lower-cased address; detail is "" when there is none."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    base, sep, detail = local.partition(DETAIL_SEPARATOR)
    if not sep or not base:
        return address, ""
    return f"{base}@{domain}", detail


def resolve_local(session: Session, address: str) -> Account | None:
    """The account an address delivers to: exact match first, then without its ``+detail``."""
    address = address.strip().lower()
    account = session.scalar(select(Account).where(Account.address == address))
    if account is not None:
        return account
    base, detail = split_detail(address)
    if not detail:
        return None
    return session.scalar(select(Account).where(Account.address == base))

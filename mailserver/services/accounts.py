"""System accounts: the mailboxes behind service addresses."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, ValidationError
from ..identity import addresses
from ..registry.folders import create_default_folders
from ..store.models import Account, ServiceAccount


def create_system_account(session: Session, reg, address: str, kind: str, ref: str) -> Account:
    """A local account nobody logs in to (no password), marked as the ``kind`` service ``ref``."""
    address = addresses.normalize_address(address, reg.domain)
    if address.rpartition("@")[2] not in reg.config.local_domains:
        raise ValidationError(f"{address}: not one of this city's domains")
    if "+" in address.partition("@")[0]:
        raise ValidationError(f"{address}: '+' is the sub-address separator (topic+subscribe@...)")
    if session.scalar(select(Account.id).where(Account.address == address)) is not None:
        raise Conflict(f"{address} is already taken")
    account = Account(address=address, state="active", password_hash=None)
    session.add(account)
    session.flush()
    create_default_folders(session, [account.id])
    session.add(ServiceAccount(account_id=account.id, kind=kind, ref=ref))
    return account


def citizen_account(session: Session, address: str) -> Account | None:
    """The active or pending real-name account at an address (None for system and agency accounts)."""
    account = session.scalar(select(Account).where(Account.address == address.strip().lower()))
    if account is None or account.citizen_id is None or account.state == "disabled":
        return None
    return account

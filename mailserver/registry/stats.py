"""The figures the city reports (the foundation's part: registry and messages stored)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from ..store.models import Account, Citizen, Message
from .context import Registry


@dataclass(frozen=True)
class Stats:
    citizens_registered: int
    accounts_activated: int
    accounts_pending: int
    accounts_disabled: int
    messages_stored: int

    def as_dict(self) -> dict:
        return asdict(self)


def stats(reg: Registry) -> Stats:
    with reg.store.reader() as s:
        states = dict(s.execute(select(Account.state, func.count()).where(Account.citizen_id.is_not(None))
                                .group_by(Account.state)).all())
        return Stats(
            citizens_registered=s.scalar(select(func.count()).select_from(Citizen)) or 0,
            accounts_activated=states.get("active", 0),
            accounts_pending=states.get("pending", 0),
            accounts_disabled=states.get("disabled", 0),
            messages_stored=s.scalar(select(func.count()).select_from(Message)) or 0,
        )

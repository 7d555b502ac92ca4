"""The outbound queue in the store: enqueue (inside the caller's transaction), claim due
entries, record results; and what `civicmail queue` shows and does.

An entry is claimed by pushing its ``next_attempt_at`` a lease ahead (``outbound.lease_seconds``),
marking it ``sending`` and naming the node (``claimed_by``): if the process dies mid-attempt the
entry simply becomes due again when the lease ends, so nothing needs resetting at start-up and two
nodes never send the same entry at once. While the node's attempts run (a slow relay can take
many minutes) it renews the lease of the entries it holds (``renew``, a heartbeat), so the lease
passes only when the node is gone.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..store import Store
from ..store.models import OutboundMessage, as_utc

QUEUED, SENDING, BOUNCED = "queued", "sending", "bounced"
#: how long a claimed entry is reserved for one delivery attempt (outbound.lease_seconds)
LEASE_SECONDS = 900.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def age_seconds(created_at: dt.datetime | None, at: dt.datetime) -> float:
    """Seconds from ``created_at`` (naive UTC as SQLite hands it back, or aware) to ``at``; 0 for None."""
    if created_at is None:
        return 0.0
    return max(0.0, (at - as_utc(created_at)).total_seconds())


def enqueue(session: Session, sender: str, recipients: list[str], raw: bytes, account_id: int | None) -> int:
    entry = OutboundMessage(sender=sender, recipients="\n".join(recipients), raw=raw, state=QUEUED, attempts=0,
                            next_attempt_at=now(), account_id=account_id)
    session.add(entry)
    session.flush()
    return entry.id


@dataclass(frozen=True)
class Claimed:
    id: int
    sender: str
    recipients: list[str]
    raw: bytes
    attempts: int
    account_id: int | None
    #: when it was queued (naive UTC on SQLite)
    created_at: dt.datetime | None = None


def claim_due(store: Store, limit: int = 20, lease_seconds: float = LEASE_SECONDS) -> list[Claimed]:
    """Take up to ``limit`` entries that are due, reserving them for one attempt by this node."""
    t = now()
    with store.session() as s:
        q = (select(OutboundMessage).where(OutboundMessage.state.in_((QUEUED, SENDING)),
                                           OutboundMessage.next_attempt_at <= t)
             .order_by(OutboundMessage.next_attempt_at).limit(limit))
        if store.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        entries = list(s.scalars(q))
        for e in entries:
            e.state = SENDING
            e.next_attempt_at = t + dt.timedelta(seconds=lease_seconds)
            e.claimed_by = store.node
        return [Claimed(e.id, e.sender, e.recipients.split("\n"), e.raw, e.attempts, e.account_id, e.created_at)
                for e in entries]


def renew(store: Store, entry_ids: list[int], lease_seconds: float = LEASE_SECONDS) -> int:
    """The heartbeat of this node's attempts: push the lease of the entries it still holds.
    Returns how many it holds."""
    if not entry_ids:
        return 0
    with store.session() as s:
        return s.execute(update(OutboundMessage).where(
            OutboundMessage.id.in_(entry_ids), OutboundMessage.state == SENDING,
            OutboundMessage.claimed_by == store.node).values(
            next_attempt_at=now() + dt.timedelta(seconds=lease_seconds))).rowcount


def delivered(store: Store, entry_id: int) -> None:
    with store.session() as s:
        s.execute(delete(OutboundMessage).where(OutboundMessage.id == entry_id))


def deferred(store: Store, entry_id: int, recipients: list[str], attempts: int, retry_at: dt.datetime,
             error: str) -> None:
    with store.session() as s:
        s.execute(update(OutboundMessage).where(OutboundMessage.id == entry_id).values(
            state=QUEUED, recipients="\n".join(recipients), attempts=attempts, next_attempt_at=retry_at,
            last_error=error[:1000], claimed_by=None))


def bounced(store: Store, entry_id: int, attempts: int, error: str) -> None:
    with store.session() as s:
        s.execute(update(OutboundMessage).where(OutboundMessage.id == entry_id).values(
            state=BOUNCED, attempts=attempts, last_error=error[:1000], claimed_by=None))


# -- what the operator sees and does (`civicmail queue`) ------------------------------------
@dataclass(frozen=True)
class QueueEntry:
    id: int
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    sender: str
    recipients: tuple[str, ...]
    size: int
    last_error: str | None


def list_entries(store: Store) -> list[QueueEntry]:
    from sqlalchemy import func

    with store.reader() as s:
        rows = s.execute(select(OutboundMessage.id, OutboundMessage.state, OutboundMessage.attempts,
                                OutboundMessage.next_attempt_at, OutboundMessage.sender, OutboundMessage.recipients,
                                func.length(OutboundMessage.raw), OutboundMessage.last_error)
                         .order_by(OutboundMessage.id)).all()
    return [QueueEntry(r[0], r[1], r[2], r[3], r[4], tuple(r[5].split("\n")), r[6] or 0, r[7]) for r in rows]


def retry(store: Store, entry_id: int) -> None:
    """Make an entry due now (a bounced one gets one more attempt)."""
    with store.session() as s:
        entry = s.get(OutboundMessage, entry_id)
        if entry is None:
            raise NotFound(f"no queue entry {entry_id}")
        entry.state = QUEUED
        entry.next_attempt_at = now()


def remove(store: Store, entry_id: int) -> None:
    with store.session() as s:
        if s.execute(delete(OutboundMessage).where(OutboundMessage.id == entry_id)).rowcount == 0:
            raise NotFound(f"no queue entry {entry_id}")

"""The audit trail: who did what to whom, and who looked at personal data, when and why.

Every audit row is written here (``record``): it carries the operating-system user of the
process, and its ``detail`` and ``reason`` pass ``hide_numbers``, so that no ID number is ever
kept in clear whatever a caller or an operator typed. The table is append-only (migration
0010): nothing here or anywhere updates or deletes a row.
"""
from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..identity.idnumber import hide_numbers
from ..store import Store
from ..store.models import AuditLog, as_utc

#: what a ``--reason`` may hold (longer is cut)
MAX_REASON = 500


@lru_cache(maxsize=1)
def os_user() -> str:
    """The login name of this process's user; its uid where the system has no name for it (a
    container without a passwd entry)."""
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def record(session: Session, action: str, detail: str | None, *, actor: str = "operator",
           reason: str | None = None) -> None:
    """Add an audit row to ``session``'s transaction: it commits with what it records."""
    reason = " ".join(reason.split())[:MAX_REASON] if reason else None
    session.add(AuditLog(actor=actor, action=action, detail=hide_numbers(detail) if detail else detail,
                         os_user=os_user(), reason=hide_numbers(reason) if reason else None))


def reveal(store: Store, action: str, detail: str, reason: str | None) -> None:
    """Record that personal data is shown or written out (``citizen show``, ``drop report``, ...).
    Called before the data leaves: if the row cannot be written, nothing is revealed."""
    with store.session() as s:
        record(s, action, detail, reason=reason)


@dataclass(frozen=True)
class AuditEntry:
    at: dt.datetime
    os_user: str | None
    actor: str
    action: str
    detail: str | None
    reason: str | None


def entries(store: Store, since: dt.datetime | None = None, limit: int | None = None) -> tuple[list[AuditEntry], bool]:
    """The rows since ``since`` (UTC), oldest first; with ``limit``, only the latest that many.
    Returns them and whether older ones were left out."""
    q = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc())
    if since is not None:
        q = q.where(AuditLog.at >= since)
    if limit:
        q = q.limit(limit + 1)
    with store.reader() as s:
        rows = [AuditEntry(as_utc(r.at), r.os_user, r.actor, r.action, r.detail, r.reason) for r in s.scalars(q)]
    more = bool(limit) and len(rows) > limit
    return list(reversed(rows[:limit] if limit else rows)), more

"""Leases: shared work that one node at a time does, claimed in the database.

A node claims a piece of work by writing its name (``Store.node``) and an expiry in one
statement; while it works it renews the expiry every third of the lease (``Heartbeat``). Another
node claims it only once the expiry has passed: the owner died, or stalled for a whole lease, and
then a renewal or a write fenced by the owner fails and the stalled node stops. A node that
finishes releases the lease at once. The expiry is read against each node's own clock (UTC):
nodes keep their clocks in step (NTP), and a lease is far longer than any skew.

The ``lease`` table holds the work that has no row of its own (the drop mailbox watcher, with
its position; a spooled file being run); a drop's lease is on its own row (``drop.owner``,
``drop.lease_until``, delivery/runner.py), an outbound entry's on its (``claimed_by``).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Callable

from sqlalchemy import delete, or_, select, update

from .db import Store
from .models import Lease, utcnow

log = logging.getLogger("civicmail.leases")


def gone(owner: str) -> bool:
    """Is ``owner`` (a ``Store.node``: host, process id, random part) a process of this host that
    has ended (killed, crashed)? Its work can then be taken over at once instead of after its
    lease. A node on another host, or a process that still runs (even stopped), is never gone."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname()[:80] or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _upsert(store: Store):
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def claim(store: Store, name: str, seconds: float) -> bool:
    """Take (or renew) the lease ``name`` for ``seconds`` unless another node holds it unexpired.
    One statement (an upsert whose update is conditional), so two nodes never both win."""
    t, now = Lease.__table__, utcnow()
    stmt = _upsert(store)(t).values(name=name, owner=store.node, expires_at=now + dt.timedelta(seconds=seconds))
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.name], set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=or_(t.c.owner == store.node, t.c.expires_at <= now)).returning(t.c.owner)
    with store.session() as s:
        return s.execute(stmt).first() is not None


def renew(store: Store, name: str, seconds: float) -> bool:
    """Push the expiry of a lease this node holds; False if it is not (or no longer) ours."""
    with store.session() as s:
        return s.execute(update(Lease).where(Lease.name == name, Lease.owner == store.node)
                         .values(expires_at=utcnow() + dt.timedelta(seconds=seconds))).rowcount == 1


def release(store: Store, name: str, forget: bool = False) -> None:
    """Give a lease back now (another node may claim it at once); ``forget`` deletes its row, for
    work that has no position to keep."""
    with store.session() as s:
        mine = (Lease.name == name, Lease.owner == store.node)
        if forget:
            s.execute(delete(Lease).where(*mine))
        else:
            s.execute(update(Lease).where(*mine).values(expires_at=utcnow()))


def position(store: Store, name: str) -> str | None:
    with store.reader() as s:
        return s.scalar(select(Lease.position).where(Lease.name == name))


def move_position(store: Store, name: str, value: str) -> bool:
    """Record the work's position; only while this node holds the lease (False otherwise: the work
    was taken over, and the taker's position stands)."""
    with store.session() as s:
        return s.execute(update(Lease).where(Lease.name == name, Lease.owner == store.node,
                                             Lease.expires_at > utcnow())
                         .values(position=value)).rowcount == 1


class Heartbeat:
    """Calls ``renew`` every ``seconds / 3`` in a thread of its own while the block runs (the work
    itself may be blocking: a drop, a relay's slow reply). ``lost`` is set once a renewal reports
    the lease gone; a renewal that fails (the database away) is tried again at the next beat."""

    def __init__(self, renew: Callable[[], bool], seconds: float, what: str) -> None:
        self.renew, self.interval, self.what = renew, max(seconds / 3, 0.05), what
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {what}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.renew():
                    log.warning("%s: the lease was taken over by another node", self.what)
                    self.lost.set()
                    return
            except Exception as exc:  # the database away: the lease may pass; the next beat tries again
                log.warning("%s: the lease could not be renewed: %s", self.what, exc.__class__.__name__)

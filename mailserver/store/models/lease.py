"""Leases: shared work that one node at a time does (a watcher's round, a spooled file), claimed
in the database with an owner and an expiry the owner renews while it works (``store.leases``)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class Lease(Base):
    __tablename__ = "lease"

    #: what is leased: "maildrop", "spool:<agency>/<notice type>/<file name>"
    name: Mapped[str] = mapped_column(String(400), primary_key=True)
    #: the node holding it (``store.leases.node_id``)
    owner: Mapped[str] = mapped_column(String(120))
    #: no other node claims it before this time, unless the owner released it
    expires_at: Mapped[dt.datetime]
    #: the work's position, moved only by the holder (the drop mailbox: JSON uidvalidity, last_uid)
    position: Mapped[str | None] = mapped_column(Text)

"""Drops (one agency file for one notice type), their rows, and the notices delivered."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class Drop(Base):
    __tablename__ = "drop"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"))
    notice_type_id: Mapped[str] = mapped_column(ForeignKey("notice_type.id"))
    filename: Mapped[str] = mapped_column(String(1000))
    #: SHA-256 of the file: the same file run again is recognised
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    #: received, running, done, failed
    state: Mapped[str] = mapped_column(String(16), default="received")
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_delivered: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class DropRow(Base):
    __tablename__ = "drop_row"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("drop.id", ondelete="CASCADE"))
    #: the row number as the agency's spreadsheet shows it (header is row 1)
    line: Mapped[int] = mapped_column(Integer)
    #: received, invalid, unmatched, held, delivered, duplicate, failed
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_drop_row_drop_line", "drop_id", "line"),)


class Notice(Base):
    """One notice delivered: the unique idempotency key makes delivery exactly-once."""

    __tablename__ = "notice"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    notice_type_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(BigId)
    drop_id: Mapped[int | None] = mapped_column(BigId)
    delivered_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

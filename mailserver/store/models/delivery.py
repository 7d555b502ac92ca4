"""Drops (one agency file for one notice type), their rows, the notices delivered, and opt-outs."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


#: a drop row's status (delivery/rowstate.py) -> the ``Drop`` column counting the drop's rows in
#: it: the pipeline's writer keeps them, the metrics export each as an outcome
ROW_COUNT_COLUMNS = {"delivered": "rows_delivered", "invalid": "rows_invalid", "unmatched": "rows_unmatched",
                     "held": "rows_held", "opted-out": "rows_opted_out", "duplicate": "rows_duplicate",
                     "failed": "rows_failed"}


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
    #: rows not delivered, by their status now (a retried row moves from one to another): the
    #: metrics' rows by outcome, kept by the pipeline's writer in the batch's own transaction
    rows_invalid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_unmatched: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_held: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_opted_out: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    #: how it arrived: cli, spool, mail
    source: Mapped[str | None] = mapped_column(String(16))
    #: the file's column names as the agency wrote them (JSON list), for the report CSV
    columns: Mapped[str | None] = mapped_column(Text)
    #: a file-level error (missing columns, unreadable file), for a drop that failed as a whole
    error: Mapped[str | None] = mapped_column(Text)
    #: the node running it (``store.leases.node_id``), while it runs: no other node resumes it ...
    owner: Mapped[str | None] = mapped_column(String(120))
    #: ... before this time; the owner renews it while it runs (a heartbeat), so it passes only
    #: when the owner died or stalled, and then another node takes the drop over
    lease_until: Mapped[dt.datetime | None]


class DropRow(Base):
    __tablename__ = "drop_row"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("drop.id", ondelete="CASCADE"))
    #: the row number as the agency's spreadsheet shows it (header is row 1)
    line: Mapped[int] = mapped_column(Integer)
    #: received, invalid, unmatched, held, opted-out, delivered, duplicate, failed
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    #: the stage that decided the status (validate, match, consent, render, deliver)
    stage: Mapped[str | None] = mapped_column(String(16))
    #: the original row (JSON), sealed with the ID-number key since it holds the ID number;
    #: kept only for rows not delivered, for the report and `drop retry`
    data: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_drop_row_drop_line", "drop_id", "line"),)


class Notice(Base):
    """One notice delivered: the idempotency key, unique per account, makes delivery exactly-once.
    On PostgreSQL the table is hash-partitioned by ``account_id`` (migration 0026: primary key
    ``(account_id, id)``, every index in its partition); SQLite keeps one table."""

    __tablename__ = "notice"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    agency_id: Mapped[str] = mapped_column(String(64))
    notice_type_id: Mapped[str] = mapped_column(String(64))
    #: no index of its own: ix_notice_account_delivered leads with it (migration 0029)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    message_id: Mapped[int | None] = mapped_column(BigId)
    drop_id: Mapped[int | None] = mapped_column(BigId)
    delivered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: NULL: delivered. "sending": being handed to the external mail store (store.mode =
    #: "external"), its LMTP 250 not yet recorded (delivery/external.py)
    state: Mapped[str | None] = mapped_column(String(16))

    #: the portal's "my notices", newest first: a page read from the index in order
    __table_args__ = (Index("ix_notice_account_delivered", "account_id", "delivered_at"),
                      # the key first (a lookup by key alone on SQLite); with the account, as a unique
                      # index of a table partitioned by account must be
                      UniqueConstraint("idempotency_key", "account_id", name="uq_notice_idempotency_key_account"))


class NoticeCount(Base):
    """Notices delivered per UTC day, agency and notice type: the counter `civicmail stats` reads
    instead of counting ``notice`` (a billion rows at city size). The pipeline's writer adds a
    batch's count in the transaction that inserts the batch's notices (``delivery/deliver.py``,
    ``count_notices``), so the two never disagree; migration 0023 filled it from ``notice``."""

    __tablename__ = "notice_count"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notice_type_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)


class NoticeOptOut(Base):
    """A citizen who asked not to receive an optional notice type (mandatory ones ignore it)."""

    __tablename__ = "notice_opt_out"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    notice_type_id: Mapped[str] = mapped_column(ForeignKey("notice_type.id"), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

"""Maintained counters, read by `civicmail stats` instead of counting a billion rows.

``count_notices`` adds to ``notice_count`` in the caller's transaction (the one that inserts the
notices), so the counter and the rows commit or roll back together. One upsert per key per call
(the pipeline calls it once a batch): two nodes delivering the same agency's notices wait on that
row's lock once a batch, not once a notice. ``INSERT ... ON CONFLICT DO UPDATE`` is the same
statement on SQLite (3.24 and later) and PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter

from .driver import driver_execute

UPSERT_NOTICE_COUNT = (
    "INSERT INTO notice_count (day, agency_id, notice_type_id, delivered) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (day, agency_id, notice_type_id) DO UPDATE SET delivered = notice_count.delivered + excluded.delivered")


def count_notices(session, counts: Counter[tuple[dt.date, str, str]]) -> None:
    """Add ``counts`` ((UTC day, agency, notice type) -> notices) to the counter, in ``session``'s
    transaction. Keys are written in sorted order, so two writers never lock them in opposite
    orders (no deadlock between two batches)."""
    sqlite = session.connection().dialect.name == "sqlite"
    rows = [(day.isoformat() if sqlite else day, agency, notice_type, n)
            for (day, agency, notice_type), n in sorted(counts.items()) if n]
    if rows:
        driver_execute(session, UPSERT_NOTICE_COUNT, rows)

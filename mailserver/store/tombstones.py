"""Pruning QRESYNC's tombstones (the ``expunged`` table), which every expunge adds to.

Tombstones older than ``imap.expunge_history_days`` are deleted, folder by folder, and the
folder's ``tombstone_floor`` rises to the highest MODSEQ deleted. A client resynchronising from
before the floor is then told every UID that is not present (RFC 7162 3.2.5.2), which is always
correct, only longer. Within a folder MODSEQs grow with time, so "older than the cutoff" is
"MODSEQ up to m": deleting by MODSEQ keeps the invariant that everything above the floor is kept.
Several nodes may prune at once: raising a floor to a maximum and deleting below it are idempotent.
"""
from __future__ import annotations

import datetime as dt

from .db import Store
from .driver import driver_execute, driver_rows, raw_reader
from .mailstore import sqlite_datetime

FOLDERS_PER_TRANSACTION = 500


def prune_tombstones(store: Store, older_than: dt.datetime) -> tuple[int, int]:
    """Delete tombstones from before ``older_than``; (folders touched, tombstones deleted)."""
    cutoff = sqlite_datetime(older_than) if store.dialect == "sqlite" else older_than
    with raw_reader(store) as r:
        marks = driver_rows(r, "SELECT folder_id, MAX(modseq), COUNT(*) FROM expunged WHERE at < ? "
                               "GROUP BY folder_id ORDER BY folder_id", cutoff)
    deleted = 0
    for i in range(0, len(marks), FOLDERS_PER_TRANSACTION):
        chunk = marks[i:i + FOLDERS_PER_TRANSACTION]
        with store.session() as s:
            driver_execute(s, "UPDATE folder SET tombstone_floor = ? WHERE id = ? AND tombstone_floor < ?",
                           [(m, f, m) for f, m, _ in chunk])
            driver_execute(s, "DELETE FROM expunged WHERE folder_id = ? AND modseq <= ?",
                           [(f, m) for f, m, _ in chunk])
        deleted += sum(n for _, _, n in chunk)
    return len(marks), deleted

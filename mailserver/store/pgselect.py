"""Reads on PostgreSQL in one round trip instead of two (issue 13) on the reader's autocommit
connection: SELECT's folder row and messages in one statement, so that both are read in one
snapshot (the message list found by the folder's name, as the folder's id is not known before
the answer; ``snapshot_rows``); and, pipelined (psycopg's pipeline mode), the look at what
changed in a folder with, when messages left it, the UIDs still there (``changes_rows``)."""
from __future__ import annotations

from .leaves import on_table
from .mailbox_sql import INFO_SQL


#: the folder's row and its messages' (uid, flags, keywords) as three arrays, in one statement
#: (one snapshot); the account given as a value, so that the planner reads one partition. The
#: three aggregates read their rows in one order (one aggregation), sorted by UID in Python.
_SNAPSHOT_SQL = (f"SELECT {', '.join('f.' + c for c in INFO_SQL.split(', '))}, f.recent_uid, m.uids, m.flags, m.kws "
                 "FROM folder f LEFT JOIN LATERAL (SELECT array_agg(uid) AS uids, array_agg(flags) AS flags, "
                 "array_agg(keywords) AS kws FROM (SELECT uid, flags, keywords FROM {message} WHERE account_id = %s "
                 "AND folder_id = f.id ORDER BY uid) o) m ON true WHERE f.account_id = %s AND f.name = %s")


def snapshot_rows(dbapi, account_id: int, name: str, table: str = "message") -> tuple[tuple | None, list[tuple]]:
    """The folder's row (``INFO_SQL``, recent_uid; None if there is none) and its messages'
    (uid, flags, keywords) in UID order, through a psycopg connection in autocommit: one
    statement, so one snapshot. Four pipelined before (a REPEATABLE READ transaction around two
    reads), which cost our CPU per statement (docs/benchmarks.md, branch pgclient). ``table``: the
    account's messages' (``Store.message_table``, its leaf partition). The arrays
    come in binary: as text, a SELECT of 100,000 messages took 14 ms more than the pipeline's
    rows, in binary 3-4 ms more."""
    with dbapi.cursor(binary=True) as cursor:
        found = cursor.execute(on_table(_SNAPSHOT_SQL, table), (account_id, account_id, name)).fetchall()
    if not found:
        return None, []
    *folder, uids, flags, kws = found[0]
    if not uids:
        return tuple(folder), []
    rows = list(zip(uids, flags, kws))
    rows.sort()  # in UID order already as PostgreSQL runs it (linear then), but not promised
    return tuple(folder), rows


#: the folder's row and its messages changed since a MODSEQ (``selection.changes_since``); the
#: account given as a value, not joined from the folder, so that the planner reads one partition
CHANGES_SQL = ("SELECT f.highestmodseq, f.uidnext, f.message_count, f.recent_uid, m.uid, m.flags, m.keywords, "
               "m.modseq FROM folder f LEFT JOIN {message} m ON m.account_id = %s AND m.folder_id = f.id "
               "AND m.modseq > %s WHERE f.id = %s AND f.account_id = %s ORDER BY m.uid")
#: the folder's UIDs, only if it holds fewer messages than the session knew of plus those above
#: the highest UID it knew (some left: expunged): a one-time filter, no scan of the folder otherwise
_UIDS_IF_SHRUNK = ("SELECT uid FROM {message} WHERE account_id = %s AND folder_id = %s AND (SELECT message_count "
                   "FROM folder WHERE id = %s) < %s + (SELECT count(*) FROM {message} WHERE account_id = %s AND "
                   "folder_id = %s AND uid > %s) ORDER BY uid")


def changes_rows(dbapi, account_id: int, folder_id: int, modseq: int, known_max_uid: int,
                 known_count: int, table: str = "message") -> tuple[list[tuple], list[tuple] | None]:
    """``CHANGES_SQL``'s rows and, in the same round trip, the folder's UIDs (uid,) if some of
    the messages known left it (None: none left, as far as this read saw; each statement has its
    own snapshot in autocommit, so the caller asks again if its count says otherwise). ``table`` as
    ``snapshot_rows``'."""
    with dbapi.pipeline():
        changes, uids = dbapi.cursor(), dbapi.cursor()
        changes.execute(on_table(CHANGES_SQL, table), (account_id, modseq, folder_id, account_id))
        uids.execute(on_table(_UIDS_IF_SHRUNK, table), (account_id, folder_id, folder_id, known_count, account_id, folder_id,
                                       known_max_uid))
    found, present = changes.fetchall(), uids.fetchall()
    return found, (present or None)


"""Reads on PostgreSQL in one round trip instead of two (issue 13), each round trip's statements
in one simple query (``driver.trip``) on the reader's autocommit connection: SELECT's folder row and messages in one READ ONLY,
REPEATABLE READ transaction, so that both are read in one snapshot (the message list found by
the folder's name, as the folder's id is not known before the answer); and the look at what
changed in a folder with, when messages left it, the UIDs still there (``changes_rows``); a
FETCH's rows with the size of their range (``rows_and_size``)."""
from __future__ import annotations

from .driver import trip
from .mailbox_sql import INFO_SQL


_FOLDER = f"SELECT {INFO_SQL}, recent_uid FROM folder WHERE account_id = %s AND name = %s"
_MESSAGES = ("SELECT uid, flags, keywords FROM message WHERE folder_id = (SELECT id FROM folder "
             "WHERE account_id = %s AND name = %s) ORDER BY uid")


def snapshot_rows(dbapi, account_id: int, name: str) -> tuple[tuple | None, list[tuple]]:
    """The folder's row (``INFO_SQL``, recent_uid; None if there is none) and its messages'
    (uid, flags, keywords) in UID order, through a psycopg connection in autocommit."""
    _, found, rows, _ = trip(dbapi, ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ()),
                             (_FOLDER, (account_id, name)), (_MESSAGES, (account_id, name)), ("COMMIT", ()))
    return (found[0] if found else None), rows


#: the folder's row and its messages changed since a MODSEQ (``selection.changes_since``)
CHANGES_SQL = ("SELECT f.highestmodseq, f.uidnext, f.message_count, f.recent_uid, m.uid, m.flags, m.keywords, "
               "m.modseq FROM folder f LEFT JOIN message m ON m.folder_id = f.id AND m.modseq > %s "
               "WHERE f.id = %s ORDER BY m.uid")
#: the folder's UIDs, only if it holds fewer messages than the session knew of plus those above
#: the highest UID it knew (some left: expunged): a one-time filter, no scan of the folder otherwise
_UIDS_IF_SHRUNK = ("SELECT uid FROM message WHERE folder_id = %s AND (SELECT message_count FROM folder WHERE id = %s) "
                   "< %s + (SELECT count(*) FROM message WHERE folder_id = %s AND uid > %s) ORDER BY uid")


def changes_rows(dbapi, folder_id: int, modseq: int, known_max_uid: int,
                 known_count: int) -> tuple[list[tuple], list[tuple] | None]:
    """``CHANGES_SQL``'s rows and, in the same round trip, the folder's UIDs (uid,) if some of
    the messages known left it (None: none left, as far as this read saw; each statement has its
    own snapshot in autocommit, so the caller asks again if its count says otherwise)."""
    found, present = trip(dbapi, (CHANGES_SQL, (modseq, folder_id)),
                          (_UIDS_IF_SHRUNK, (folder_id, folder_id, known_count, folder_id, known_max_uid)))
    return found, (present or None)


def rows_and_size(dbapi, sql: str, params: tuple, size_sql: str, size_params: tuple) -> tuple[list[tuple], tuple]:
    """The rows of ``sql`` and the one row of ``size_sql`` ("?" placeholders both), in one round trip."""
    rows, size = trip(dbapi, (sql.replace("?", "%s"), params), (size_sql.replace("?", "%s"), size_params))
    return rows, size[0]

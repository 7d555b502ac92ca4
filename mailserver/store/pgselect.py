"""SELECT's reads on PostgreSQL in one round trip instead of two (issue 13): the folder's row
and its messages pipelined (psycopg's pipeline mode) in one READ ONLY, REPEATABLE READ
transaction on the reader's autocommit connection, so that both are read in one snapshot (the
message list found by the folder's name, as the folder's id is not known before the answer)."""
from __future__ import annotations

from .mailbox_sql import INFO_SQL


def snapshot_rows(dbapi, account_id: int, name: str) -> tuple[tuple | None, list[tuple]]:
    """The folder's row (``INFO_SQL``, recent_uid; None if there is none) and its messages'
    (uid, flags, keywords) in UID order, through a psycopg connection in autocommit."""
    with dbapi.pipeline():
        control, folder, messages = dbapi.cursor(), dbapi.cursor(), dbapi.cursor()
        control.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        folder.execute(f"SELECT {INFO_SQL}, recent_uid FROM folder WHERE account_id = %s AND name = %s",
                       (account_id, name))
        messages.execute("SELECT uid, flags, keywords FROM message WHERE folder_id = (SELECT id FROM folder "
                         "WHERE account_id = %s AND name = %s) ORDER BY uid", (account_id, name))
        control.execute("COMMIT")  # one Sync for the four, as the pipeline ends: one round trip
    found, rows = folder.fetchall(), messages.fetchall()
    return (found[0] if found else None), rows

"""STORE on PostgreSQL in two round trips instead of five (issue 13): the statements of the
transaction go on a connection in autocommit, with an explicit BEGIN, so that psycopg's own
BEGIN is no round trip of its own, each round trip's statements in one simple query (``trip``):

1. BEGIN, the folder row's MODSEQ raised (which locks it), the messages read;
2. the changed messages written in one statement, the other nodes told (``pg_notify``,
   delivered at COMMIT) and the COMMIT; or, when nothing changes, the MODSEQ given back and
   the COMMIT.

The messages are read by their own statement after the folder's UPDATE, so under READ
COMMITTED they are read after the lock is held (a statement of both would read them in a
snapshot taken before it waited for the lock).

A round trip's statements go as one simple query, their parameters bound by psycopg on the
client (``ClientCursor``), not pipelined (psycopg's pipeline mode, as before): measured on the
STORE's two round trips, 0.20 ms of client CPU against 0.38, PostgreSQL's own CPU the same
within the noise (0.29 to 0.32 ms against 0.28: it parses them each time, where the pipeline's
were prepared), docs/benchmarks.md (branch pgfast). Nothing is prepared on the server, so it
holds behind PgBouncer in transaction mode."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from .api import Stored, UidRanges
from .driver import raw_writer, trip
from .mailbox_sql import uid_sql
from .notify import NOTIFY_SQL, notify_arrays

if TYPE_CHECKING:
    from .db import Store
    from .selection import FlagChange

BUMP = "UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = %s RETURNING highestmodseq"
GIVE_BACK = "UPDATE folder SET highestmodseq = highestmodseq - 1 WHERE id = %s"
_WRITE = ("UPDATE message SET flags = v.flags, keywords = v.keywords, modseq = %s "
          "FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS v(id, flags, keywords) WHERE message.id = v.id")
NOTIFY = NOTIFY_SQL.format("%s", "%s")
COMMIT = ("COMMIT", ())


def first_trip(conn, folder_id: int, sql: str, uids: UidRanges | None) -> tuple[int, list[tuple]]:
    """The first round trip of a write of messages in a folder: BEGIN, the folder's MODSEQ
    raised (its row locked), then ``sql`` on its messages ({uids}: the UIDs' condition; every
    message without ``uids``). The new MODSEQ, and ``sql``'s rows."""
    where, params = uid_sql(uids) if uids else ("1 = 1", [])
    _, found, rows = trip(conn, ("BEGIN", ()), (BUMP, (folder_id,)),
                          (sql.format(uids=where.replace("?", "%s")), (folder_id, *params)))
    if not found:
        raise NotFound("folder is gone")
    return found[0][0], rows


def store_flags_pg(store: Store, folder_id: int, uids: UidRanges, change: FlagChange) -> Stored:
    """``selection.store_flags`` on PostgreSQL (see the module's text)."""
    with raw_writer(store) as conn:
        modseq, rows = first_trip(conn, folder_id, "SELECT id, uid, flags, keywords, modseq FROM message "
                                  "WHERE folder_id = %s AND {uids} ORDER BY uid", uids)
        out, modified, changes = change.apply(rows)
        if changes:
            nflags, nkws, ids, _ = zip(*changes)
            trip(conn, (_WRITE, (modseq, list(ids), list(nflags), list(nkws))),
                 (NOTIFY, notify_arrays([str(folder_id)])), COMMIT)
        else:
            # Nothing changed: give the MODSEQ back (the row is still locked by us), so that
            # HIGHESTMODSEQ stays the highest MODSEQ of a message and no session is woken.
            trip(conn, (GIVE_BACK, (folder_id,)), COMMIT)
    if not changes:
        return Stored(out, 0, 0, modified)
    for _, _, _, i in changes:
        out[i] = out[i][:3] + (modseq,)
    store.hub.changed([folder_id])
    return Stored(out, modseq - 1, modseq, modified)

"""STORE on PostgreSQL in two round trips instead of five (issue 13): the statements of the
transaction go pipelined (psycopg's pipeline mode) on a pooled connection in autocommit, with
an explicit BEGIN, so that psycopg's own BEGIN is no round trip of its own:

1. BEGIN, the folder row's MODSEQ raised (which locks it), the messages read;
2. the changed messages written and the other nodes told (``pg_notify``, delivered at
   COMMIT) in one statement, and the COMMIT; or, when nothing changes, the MODSEQ given back and
   the COMMIT.

The messages are read by their own statement after the folder's UPDATE, so under READ
COMMITTED they are read after the lock is held (a statement of both would read them in a
snapshot taken before it waited for the lock). No statement is prepared on the server beyond
what the connection's settings allow (``prepare_threshold`` is off behind PgBouncer).
Each round trip sent as one simple query bound on the client (psycopg's ClientCursor) instead
measured worse: 0.10 ms less of our CPU a STORE, 0.15 ms more of PostgreSQL's, which parses and
plans each statement again (docs/benchmarks.md, branch pgfast); on shared cores that is a loss."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from .api import Stored, UidRanges
from .driver import raw_writer
from .leaves import on_table
from .mailbox_sql import uid_sql
from .notify import NOTIFY_SQL, notify_arrays

if TYPE_CHECKING:
    from .db import Store
    from .selection import FlagChange

BUMP = "UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = %s RETURNING highestmodseq, uidnext, recent_uid"
GIVE_BACK = "UPDATE folder SET highestmodseq = highestmodseq - 1 WHERE id = %s"
#: ``{message}``: the account's messages' table (``Store.message_table``, its leaf partition)
_WRITE = ("UPDATE {message} AS m SET flags = v.flags, keywords = v.keywords, modseq = %s "
          "FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS v(id, flags, keywords) "
          "WHERE m.account_id = %s AND m.id = v.id")
_READ = "SELECT id, uid, flags, keywords, modseq FROM {message} WHERE account_id = %s AND folder_id = %s AND {uids} ORDER BY uid"
NOTIFY = NOTIFY_SQL.format("%s", "%s")


def with_notify(*writes: str) -> str:
    """One statement of ``writes`` (each of its own table: they all read the statement's one
    snapshot) and the ``NOTIFY`` after them; its parameters those of each write, then NOTIFY's.
    Each statement more in psycopg's pipeline mode cost 30-35 us of our CPU (docs/benchmarks.md)."""
    return "WITH " + ", ".join(f"w{i} AS ({w})" for i, w in enumerate(writes)) + " " + NOTIFY


_WRITE_NOTIFY = with_notify(_WRITE)


def first_trip(conn, pipe, account_id: int, folder_id: int, sql: str,
               uids: UidRanges | None) -> tuple[Any, tuple, list[tuple]]:
    """The first round trip of a write of messages in a folder: BEGIN, the folder's MODSEQ
    raised (its row locked), then ``sql`` on its messages (its parameters the account, the
    folder, then {uids}: the UIDs' condition; every message without ``uids``). The cursor to
    send the rest on, the folder's (new MODSEQ, UIDNEXT, \\Recent mark), ``sql``'s rows."""
    where, params = uid_sql(uids) if uids else ("1 = 1", [])
    bump, messages = conn.cursor(), conn.cursor()
    bump.execute("BEGIN")
    bump.execute(BUMP, (folder_id,))
    messages.execute(sql.format(uids=where.replace("?", "%s")), (account_id, folder_id, *params))
    pipe.sync()
    found = bump.fetchall()
    if not found:
        raise NotFound("folder is gone")
    return bump, found[0], messages.fetchall()


def store_flags_pg(store: Store, account_id: int, folder_id: int, uids: UidRanges, change: FlagChange) -> Stored:
    """``selection.store_flags`` on PostgreSQL (see the module's text)."""
    table = store.message_table(account_id)
    with raw_writer(store) as conn, conn.pipeline() as pipe:
        bump, (modseq, _, _), rows = first_trip(conn, pipe, account_id, folder_id, on_table(_READ, table), uids)
        out, modified, changes = change.apply(rows)
        if changes:
            nflags, nkws, ids, _ = zip(*changes)
            bump.execute(on_table(_WRITE_NOTIFY, table), (modseq, list(ids), list(nflags), list(nkws), account_id,
                                         *notify_arrays([str(folder_id)])))
        else:
            # Nothing changed: give the MODSEQ back (the row is still locked by us), so that
            # HIGHESTMODSEQ stays the highest MODSEQ of a message and no session is woken.
            bump.execute(GIVE_BACK, (folder_id,))
        bump.execute("COMMIT")  # sent, and its answer read, as the pipeline ends
    if not changes:
        return Stored(out, 0, 0, modified)
    for _, _, _, i in changes:
        out[i] = out[i][:3] + (modseq,)
    store.hub.changed([folder_id])
    return Stored(out, modseq - 1, modseq, modified)

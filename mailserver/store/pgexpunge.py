"""EXPUNGE on PostgreSQL in two round trips instead of nine (issue 13), as ``pgflags`` does STORE:
the statements go pipelined (psycopg's pipeline mode) on a pooled connection in autocommit, with
an explicit BEGIN:

1. BEGIN, the folder row's MODSEQ raised (which locks it), the \\Deleted messages deleted
   (their UIDs, contents and sizes returned);
2. the folder's counters lowered, a tombstone per UID at the new MODSEQ (QRESYNC's VANISHED),
   the contents' references released and the other nodes told (``pg_notify``), in one
   statement; then a content nobody points at any more deleted (its blob key queued for the
   collector) and the COMMIT; or, when
   nothing was deleted, the MODSEQ given back and the COMMIT.

The messages are deleted by their own statement after the folder's UPDATE, so under READ
COMMITTED they are found after the lock is held (``pgflags``); the folder row is locked first,
as STORE and APPEND lock it, so that no two writers of a folder deadlock. What is written is
what ``mailbox_sql.remove_messages`` writes (its oracle, and the path on SQLite)."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING

from .api import Changes, Expunged, UidRanges
from .driver import raw_writer
from .leaves import on_table
from .models.mail import DELETED
from .pgflags import GIVE_BACK, first_trip, with_notify
from .notify import notify_arrays

if TYPE_CHECKING:
    from .db import Store

_COUNTERS = "UPDATE folder SET message_count = message_count - %s, total_size = total_size - %s WHERE id = %s"
_TOMBSTONES = "INSERT INTO expunged (folder_id, modseq, uid, at) SELECT %s, %s, u, %s FROM unnest(%s::bigint[]) AS u"
_RELEASE = ("UPDATE content SET refcount = refcount - v.n FROM unnest(%s::bigint[], %s::int[]) AS v(id, n) "
            "WHERE content.id = v.id")
#: the contents nobody points at any more, and their blob keys queued for the collector (``bodies.release``)
_DROP = ("WITH gone AS (DELETE FROM content WHERE refcount <= 0 AND id = ANY(%s::bigint[]) RETURNING blob_key) "
         "INSERT INTO blob_release (blob_key, at) SELECT DISTINCT blob_key, %s FROM gone WHERE blob_key <> ''")

#: the folder's \\Deleted messages removed (``first_trip``), in the account's messages' table
#: (``{message}``: ``Store.message_table``, its leaf partition)
_DELETE = (f"DELETE FROM {{message}} WHERE account_id = %s AND folder_id = %s AND (flags & {DELETED}) != 0 AND {{uids}} "
           "RETURNING uid, content_id, size")
#: the counters, the tombstones, the release and the NOTIFY in one statement (``with_notify``)
_WRITES = with_notify(_COUNTERS, _TOMBSTONES, _RELEASE)


def expunge_pg(store: Store, account_id: int, folder_id: int, uids: UidRanges | None) -> list[int]:
    """``selection.expunge`` on PostgreSQL (see the module's text): the UIDs removed, ascending."""
    with raw_writer(store) as conn, conn.pipeline() as pipe:
        bump, (modseq, uidnext, recent_uid), removed = first_trip(conn, pipe, account_id, folder_id,
                                           on_table(_DELETE, store.message_table(account_id)), uids)
        if removed:
            gone, contents, sizes = zip(*removed)
            at = dt.datetime.now(dt.timezone.utc)
            references = Counter(contents)
            bump.execute(_WRITES, (len(removed), sum(sizes), folder_id, folder_id, modseq, at, list(gone),
                                   list(references), list(references.values()), *notify_arrays([str(folder_id)])))
            bump.execute(_DROP, (list(references), at))  # after the release: it reads the refcounts
        else:
            bump.execute(GIVE_BACK, (folder_id,))  # nothing removed: HIGHESTMODSEQ stays (``pgflags``)
        bump.execute("COMMIT")  # sent, and its answer read, as the pipeline ends
    if not removed:
        return []
    store.hub.changed([folder_id])
    # the folder's row was locked from its UPDATE on: its change by this write alone (api.Expunged)
    return Expunged(sorted(gone), Changes(modseq, uidnext, [], [], None, recent_uid))

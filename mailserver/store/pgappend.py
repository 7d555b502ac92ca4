"""APPEND of one message on PostgreSQL in two round trips instead of ten (issue 13), as ``pgflags``
does STORE: the statements go pipelined (psycopg's pipeline mode) on a pooled connection in
autocommit, with an explicit BEGIN:

1. BEGIN; the folder's row moved on (its UIDNEXT, MODSEQ, count and size: which locks it) and
   read back; the content row, its sort fields and the message row written in one statement,
   the message taking the UID and MODSEQ the folder row now says; the account's quota and use,
   the message counted;
2. over quota, or no such folder: ROLLBACK; else the folder's \\Recent mark claimed (a session
   that has it selected) and the other nodes told (``pg_notify``), in one statement, and the
   COMMIT.

What is written is what ``mailstore.insert_messages`` writes (the path of several messages, of
the external store and of a blob store, and on SQLite). The body was parsed before, off the
write (``selection.prepare_append``)."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..errors import NotFound, QuotaExceeded
from ..mime import analyze, sort_fields_of
from .api import AppendedMany, Changes, NewMessage
from .driver import raw_writer
from .leaves import on_table
from .mailstore import CONTENT_COLUMNS, CONTENT_SORT_COLUMNS, MESSAGE_COLUMNS
from .notify import notify_arrays
from .pgflags import NOTIFY, with_notify

if TYPE_CHECKING:
    from .db import Store

_FOLDER = ("UPDATE folder SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1, "
           "message_count = message_count + 1, total_size = total_size + %s WHERE account_id = %s AND name = %s "
           "RETURNING id, uidvalidity, uidnext - 1, recent_uid, highestmodseq")


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


#: the content row, its sort fields beside it and the message, in the folder as it now is; the
#: message into the account's messages' table (``{message}``: ``Store.message_table``, its leaf)
_INSERT = (f"WITH c AS (INSERT INTO content ({', '.join(CONTENT_COLUMNS)}) VALUES ({_marks(len(CONTENT_COLUMNS))}) "
           f"RETURNING id), "
           f"s AS (INSERT INTO content_sort ({', '.join(CONTENT_SORT_COLUMNS)}) "
           f"VALUES ((SELECT id FROM c), {_marks(len(CONTENT_SORT_COLUMNS) - 1)})) "
           f"INSERT INTO {{message}} ({', '.join(MESSAGE_COLUMNS)}) SELECT f.account_id, f.id, f.uidnext - 1, f.highestmodseq, "
           f"%s::int, %s::text, %s, %s, %s::bigint, c.id FROM folder f, c WHERE f.account_id = %s AND f.name = %s "
           f"RETURNING id")
#: the account's quota and the bytes its folders hold (``mailstore.quota_usage_of``)
_QUOTA = ("SELECT a.quota_bytes, (SELECT coalesce(sum(f.total_size), 0) FROM folder f WHERE f.account_id = a.id) "
          "FROM account a WHERE a.id = %s")
#: the folder's \\Recent mark claimed: its row is locked, so the mark read is the mark now
_CLAIM = "UPDATE folder SET recent_uid = %s WHERE id = %s"
_CLAIM_NOTIFY = with_notify(_CLAIM)  # one statement: each in the pipeline costs its own (``with_notify``)


def append_one_pg(store: Store, m: NewMessage, quota_default: int, claim_recent: bool) -> AppendedMany:
    """``selection.append_messages`` of one message, on PostgreSQL without a blob store or an
    external store (see the module's text)."""
    an = m.analyzed or analyze(m.raw)
    size = m.byte_size
    now = dt.datetime.now(dt.timezone.utc)
    content = (m.raw, None, an.size, an.header_size, an.envelope, an.body, an.bodystructure, an.search_text,
               an.preview, 1)
    with raw_writer(store) as conn, conn.pipeline() as pipe:
        folder, message, quota = conn.cursor(), conn.cursor(), conn.cursor()
        folder.execute("BEGIN")
        folder.execute(_FOLDER, (size, m.account_id, m.folder))
        message.execute(on_table(_INSERT, store.message_table(m.account_id)), (*content, *(an.sort or sort_fields_of(m.raw)), m.flags, m.keywords,
                                  m.internaldate or now, now, size, m.account_id, m.folder))
        quota.execute(_QUOTA, (m.account_id,))
        pipe.sync()
        found, quotas = folder.fetchall(), quota.fetchall()
        limit, used = quotas[0] if quotas else (None, 0)
        if not found or used > (limit or quota_default):
            folder.execute("ROLLBACK")
            pipe.sync()
            if not found:
                raise NotFound(f"no folder {m.folder}")
            raise QuotaExceeded(f"mailbox of account {m.account_id} is over its quota")
        folder_id, uidvalidity, m.uid, recent_uid, modseq = found[0]
        m.folder_id, m.message_id = folder_id, message.fetchone()[0]
        recent = claim_recent and recent_uid == m.uid - 1
        told = notify_arrays([str(folder_id)])
        if recent:
            folder.execute(_CLAIM_NOTIFY, (m.uid, folder_id, *told))
        else:
            folder.execute(NOTIFY, told)
        folder.execute("COMMIT")  # sent, and its answer read, as the pipeline ends
    store.hub.changed([folder_id])
    # The folder's row was locked from its UPDATE on: a session that had seen the MODSEQ before
    # this one saw the folder up to this message, which it now needs no look to be told of.
    own = Changes(modseq, m.uid + 1, [(m.uid, m.flags, m.keywords, modseq)], [], None, m.uid if recent else recent_uid)
    return AppendedMany(uidvalidity, [m.uid], recent, own)

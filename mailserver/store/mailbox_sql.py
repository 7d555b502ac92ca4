"""The SQL both halves of the mailbox store share: the write transaction (group commit on
SQLite), plain-SQL reads through the driver's cursor, the folder row, UID ranges, and the
low-level steps of removing and copying messages. See ``mailboxes.py``."""
from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict
from typing import Iterator

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from . import bodies
from .api import FolderInfo, NewMessage, UidRanges
from .db import Store
from .driver import driver_execute, driver_rows
from .mailstore import insert_messages, sqlite_datetime
from .models import Content, Folder, Message
from .notify import announce

F = Folder.__table__
M = Message.__table__
C = Content.__table__


@contextlib.contextmanager
def writing(store: Store) -> Iterator[Session]:
    """A write transaction. On SQLite, writes of this process share commits (groupcommit.py);
    the block's work is durable when the ``with`` statement has finished."""
    if store.dialect != "sqlite":
        with store.session() as session:
            yield session
        return
    with store.commits.write() as session:
        yield session


def serialized_writes(store: Store):
    """Queue a write made through another module (``record_login``) with ours."""
    return store.commits.exclusive() if store.dialect == "sqlite" else contextlib.nullcontext()


def info_of_row(row) -> FolderInfo:
    return FolderInfo(row.id, row.name, row.special_use, row.uidvalidity, row.uidnext, row.highestmodseq,
                      row.message_count, row.total_size)


INFO_COLS = (F.c.id, F.c.name, F.c.special_use, F.c.uidvalidity, F.c.uidnext, F.c.highestmodseq,
              F.c.message_count, F.c.total_size)


def uid_filter(ranges: UidRanges):
    return or_(*[M.c.uid.between(lo, hi) if lo != hi else M.c.uid == lo for lo, hi in ranges])


INFO_SQL = "id, name, special_use, uidvalidity, uidnext, highestmodseq, message_count, total_size"


def info_of(t: tuple) -> FolderInfo:
    return FolderInfo(*t[:8])


def folder_row(session: Session, account_id: int, name: str, lock: bool = False) -> FolderInfo:
    sql = f"SELECT {INFO_SQL} FROM folder WHERE account_id = ? AND name = ?"
    if lock and session.get_bind().dialect.name == "postgresql":
        sql += " FOR UPDATE"
    rows = driver_rows(session, sql, account_id, name)
    if not rows:
        raise NotFound(f"no folder {name}")
    return info_of(rows[0])


def uid_sql(ranges: UidRanges) -> tuple[str, list[int]]:
    """A WHERE fragment (and its parameters) for UID ranges."""
    parts, params = [], []
    for lo, hi in ranges:
        if lo == hi:
            parts.append("uid = ?")
            params.append(lo)
        else:
            parts.append("uid BETWEEN ? AND ?")
            params += [lo, hi]
    return "(" + " OR ".join(parts) + ")", params


def bump_modseq(session: Session, folder_id: int, count_delta: int = 0, size_delta: int = 0) -> int:
    """Raise the folder's HIGHESTMODSEQ (and move its message count and total size) in one
    statement through the driver's cursor; on PostgreSQL the UPDATE also locks the row for the
    rest of the transaction."""
    found = driver_rows(session, "UPDATE folder SET highestmodseq = highestmodseq + 1, "
                                 "message_count = message_count + ?, total_size = total_size + ? "
                                 "WHERE id = ? RETURNING highestmodseq", count_delta, size_delta, folder_id)
    if not found:
        raise NotFound("folder is gone")
    return found[0][0]


def touch_messages(session: Session, messages: list[tuple[int, int]]) -> list[int]:
    """Give messages ((account id, message id) each) a new MODSEQ without changing them, so that
    whatever follows their folders by MODSEQ (the services worker's watermark, the FolderWatcher
    of every server process, CONDSTORE clients, who refetch their unchanged flags) looks at them
    again. Returns the folder ids touched."""
    if not messages:
        return []
    by_account: dict[int, list[int]] = defaultdict(list)
    for account_id, mid in messages:
        by_account[account_id].append(mid)
    by_folder: dict[int, list[int]] = defaultdict(list)
    account_of: dict[int, int] = {}
    for account_id, mids in by_account.items():
        for mid, fid in session.execute(select(M.c.id, M.c.folder_id).where(M.c.account_id == account_id,
                                                                             M.c.id.in_(mids))).all():
            by_folder[fid].append(mid)
            account_of[fid] = account_id
    for fid in sorted(by_folder):  # one order for every writer: no deadlock on the folder rows
        modseq = bump_modseq(session, fid)
        session.execute(update(M).where(M.c.account_id == account_of[fid], M.c.id.in_(by_folder[fid]))
                        .values(modseq=modseq), execution_options={"synchronize_session": False})
    announce(session, by_folder)  # other nodes (PostgreSQL NOTIFY, sent at commit)
    return sorted(by_folder)


def release_content(session: Session, content_ids: list[int]) -> None:
    """Lower refcounts; delete content nobody points at any more."""
    counts: dict[int, int] = defaultdict(int)
    for cid in content_ids:
        counts[cid] += 1
    if not counts:
        return
    # plain SQL through the driver: EXPUNGE's hot path (no statement built per call)
    driver_execute(session, "UPDATE content SET refcount = refcount - ? WHERE id = ?",
                   [(n, cid) for cid, n in counts.items()])
    ids = list(counts)
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        gone = driver_rows(session, f"DELETE FROM content WHERE refcount <= 0 AND id IN ({','.join('?' * len(chunk))}) "
                                    "RETURNING blob_key", *chunk)
        bodies.release(session, [k for (k,) in gone])  # the blob goes at the collector's next round


def remove_messages(session: Session, account_id: int, folder_id: int, uids: list[int], release: bool = True,
                    rows: list[tuple[int, int, int]] | None = None) -> None:
    """Delete these messages from a folder and fix its counters (caller's transaction). The
    removal raises the folder's HIGHESTMODSEQ, and each removed UID leaves a tombstone at that
    MODSEQ (QRESYNC's VANISHED, RFC 7162 3.2). ``rows``: (uid, content id, size) of exactly
    these messages, read by the caller in this transaction (not read again here)."""
    if not uids:
        return
    content_ids: list[int] = []
    removed: list[int] = []
    size = 0
    for i in range(0, len(uids), 900):
        chunk = uids[i:i + 900]
        marks = ",".join("?" * len(chunk))
        for uid, cid, sz in (rows[i:i + 900] if rows is not None else driver_rows(
                session, f"SELECT uid, content_id, size FROM message WHERE account_id = ? AND folder_id = ? "
                         f"AND uid IN ({marks})", account_id, folder_id, *chunk)):
            removed.append(uid)
            content_ids.append(cid)
            size += sz
        driver_execute(session, f"DELETE FROM message WHERE account_id = ? AND folder_id = ? AND uid IN ({marks})",
                       [(account_id, folder_id, *chunk)])
    modseq = bump_modseq(session, folder_id, -len(content_ids), -size)
    if removed:
        at = dt.datetime.now(dt.timezone.utc)
        if session.get_bind().dialect.name == "sqlite":
            at = sqlite_datetime(at)  # as SQLAlchemy's DateTime stores it there
        driver_execute(session, "INSERT INTO expunged (folder_id, modseq, uid, at) VALUES (?, ?, ?, ?)",
                       [(folder_id, modseq, uid, at) for uid in removed])
    if release:
        release_content(session, content_ids)
    announce(session, [folder_id])


def copy_rows(session: Session, account_id: int, rows, dest: str) -> list[int]:
    news = [NewMessage(account_id=account_id, raw=b"", folder=dest, flags=r.flags, keywords=r.keywords,
                       internaldate=r.internaldate, reuse_content_id=r.content_id, size=r.size) for r in rows]
    insert_messages(session, news)
    return [m.uid for m in news]



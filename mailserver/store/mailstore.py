"""Putting messages into mailboxes: the one write path SMTP, the pipeline and APPEND share.

UIDs and MODSEQs are allocated in the same transaction that inserts the messages, so UIDs in a
folder only grow and a rolled-back transaction leaves no trace. The caller commits; only then
may it acknowledge (``250`` after DATA, tagged ``OK`` after APPEND), and only then are sessions
told (``store.hub.changed``). This is the SQL side of ``api.MailStore``'s delivery
(``sqlstore.SqlMailStore`` calls it); the raw bytes are written in ``write_contents`` alone.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound, QuotaExceeded
from ..mime import Analyzed, analyze, sort_fields_of
from ..mime.sortkeys import COLUMNS as SORT_COLUMNS
from . import bodies
from .api import Delivered, NewMessage
from .db import EXTERNAL_MAILBOXES, Store
from .driver import driver_execute, driver_rows, on_sqlite, unnest_insert_sql, unnest_params
from .models import Content, Folder
from .notify import announce


def _folder_ids(session: Session, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    by_account: dict[str, list[int]] = defaultdict(list)
    for account_id, name in wanted:
        by_account[name].append(account_id)
    found: dict[tuple[int, str], int] = {}
    for name, accounts in by_account.items():
        for chunk in _chunks(accounts, 900):
            # through the driver: SQLAlchemy's coercion of each bound value cost more than the lookups
            rows = driver_rows(session, f"SELECT account_id, id FROM folder WHERE name = ? "
                               f"AND account_id IN ({', '.join('?' * len(chunk))})", name, *chunk)
            for account_id, folder_id in rows:
                found[(account_id, name)] = folder_id
    missing = wanted - found.keys()
    if missing:
        account_id, name = sorted(missing)[0]
        raise NotFound(f"account {account_id} has no folder {name}")
    return found


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


CONTENT_COLUMNS = ("raw", "blob_key", "size", "header_size", "envelope", "body", "bodystructure", "search_text",
                   "preview", "refcount")
#: the content_sort table: what SORT and THREAD read of each content row
CONTENT_SORT_COLUMNS = ("content_id", *SORT_COLUMNS)
MESSAGE_COLUMNS = ("account_id", "folder_id", "uid", "modseq", "flags", "keywords", "internaldate", "savedate", "size",
                   "content_id")


def pg_insert_ids(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> list[int]:
    """PostgreSQL: rows inserted by one statement (``driver.unnest_insert_sql``), and their new
    ids in the order of ``rows``. The rows go in in their order, so the ids the sequence gives
    them ascend in it: the same reliance as SQLAlchemy's own ``sort_by_parameter_order`` on
    PostgreSQL, without its per-row parameter handling (a multi-row VALUES of every value bound
    one by one), which cost more than the insert."""
    if not rows:
        return []
    found = driver_rows(session, unnest_insert_sql(table, columns, "id"), *unnest_params(rows))
    return sorted(i for (i,) in found)


def sqlite_insert_ids(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> list[int]:
    """SQLite: insert rows with one driver ``executemany`` and return their ids in order.

    The ids are the ones SQLite itself would choose (the tables have no AUTOINCREMENT: the next
    rowid is the largest plus one), stated explicitly so that no RETURNING is needed; the caller's
    transaction holds the write lock (BEGIN IMMEDIATE), so nobody else takes them meanwhile.
    SQLAlchemy's per-row parameter handling cost more than the insert itself on bulk writes.
    """
    if not rows:
        return []
    first = driver_rows(session, f"SELECT coalesce(max(id), 0) + 1 FROM {table}")[0][0]
    marks = ", ".join("?" * (len(columns) + 1))
    driver_execute(session, f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES ({marks})",
                   [(first + i, *row) for i, row in enumerate(rows)])
    return list(range(first, first + len(rows)))


def sqlite_datetime(value: dt.datetime) -> str:
    """A datetime as SQLAlchemy's DateTime stores it on SQLite (its fields, no offset)."""
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")


def quota_usage_of(session, account_ids: Sequence[int]) -> dict[int, tuple[int, int | None]]:
    """(bytes in all its folders, its own quota or None) of each account: the one place quota
    usage is read (``over_quota``, ``check_quota`` and GETQUOTA all come here). ``session``: a
    Session or a ``raw_reader``."""
    out: dict[int, tuple[int, int | None]] = {}
    ids = sorted(set(account_ids))
    for chunk in _chunks(ids, 900):
        for account_id, quota, used in driver_rows(
                session, f"SELECT a.id, a.quota_bytes, (SELECT coalesce(sum(f.total_size), 0) FROM folder f "
                         f"WHERE f.account_id = a.id) FROM account a WHERE a.id IN ({', '.join('?' * len(chunk))})",
                *chunk):
            out[account_id] = (int(used or 0), quota)
    return out


def over_quota(session, items: Sequence[tuple[int, Sequence[int]]], quota_default: int) -> set[int]:
    """Indexes of items ((bytes, account ids) each) that would take one of their accounts over
    quota, counting the items before them that fit."""
    usage = quota_usage_of(session, [a for _, accounts in items for a in accounts])
    adding: dict[int, int] = defaultdict(int)
    refused: set[int] = set()
    for n, (size, accounts) in enumerate(items):
        if any(usage.get(a, (0, None))[0] + adding[a] + size > (usage.get(a, (0, None))[1] or quota_default)
               for a in accounts):
            refused.add(n)
            continue
        for a in accounts:
            adding[a] += size
    return refused


def check_quota(session, messages: Sequence[NewMessage], quota_default: int) -> None:
    """Raise QuotaExceeded when the messages together would take an account over quota."""
    adding: dict[int, int] = defaultdict(int)
    for m in messages:
        adding[m.account_id] += m.byte_size
    items = [(size, (account_id,)) for account_id, size in adding.items()]
    refused = over_quota(session, items, quota_default)
    if refused:
        raise QuotaExceeded(f"mailbox of account {items[min(refused)][1][0]} is over its quota")


def write_contents(session: Session, contents: list[tuple[bytes, Analyzed, int]],
                   staged: Sequence[tuple[str, int | None]] | None = None) -> list[int]:
    """Insert content rows ((raw, analysis, references) each) and their sort fields; their ids
    in order. The one place a message's raw bytes are written: into the blob store (durable
    before this transaction commits; ``staged``: (key, epoch) of each body ``bodies.stage`` put
    there already, before the transaction), else into the row."""
    staged = staged or [("", None)] * len(contents)
    blob_keys = bodies.seal(session, [(raw, key, epoch) for (raw, _, _), (key, epoch) in zip(contents, staged)])
    rows = [(None if blob_keys else raw, blob_keys[n] if blob_keys else None, an.size, an.header_size, an.envelope,
             an.body, an.bodystructure, an.search_text, an.preview, refs)
            for n, (raw, an, refs) in enumerate(contents)]
    if session.get_bind().dialect.name == "sqlite":
        content_ids = sqlite_insert_ids(session, "content", CONTENT_COLUMNS, rows)
    else:
        content_ids = pg_insert_ids(session, "content", CONTENT_COLUMNS, rows)
    # what SORT and THREAD read, beside each new content row (a writer that brought no sort
    # fields gets them from the header here, so every message has them)
    sort_rows = [(cid, *(an.sort or sort_fields_of(raw))) for cid, (raw, an, _) in zip(content_ids, contents)]
    if on_sqlite(session):
        driver_execute(session, f"INSERT INTO content_sort ({', '.join(CONTENT_SORT_COLUMNS)}) "
                                f"VALUES ({', '.join('?' * len(CONTENT_SORT_COLUMNS))})", sort_rows)
    elif sort_rows:
        driver_execute(session, unnest_insert_sql("content_sort", CONTENT_SORT_COLUMNS),
                       [unnest_params(sort_rows)])
    return content_ids


def read_raw(store: Store, session, account_id: int, message_ids: Sequence[int]) -> dict[int, bytes]:
    """The raw bytes of an account's messages by message id, in ``session``'s transaction on ``store`` (those
    gone are missing), from the content row or the blob store. Besides FETCH's rows
    (``selection.fetch_rows``, ``message_raw``), the one place a message's raw bytes are read."""
    out: dict[int, bytes] = {}
    for chunk in _chunks(sorted(set(message_ids)), 900):
        for mid, raw, key in driver_rows(session, "SELECT message.id, content.raw, content.blob_key FROM message "
                                                  "JOIN content ON content.id = message.content_id WHERE "
                                                  f"message.account_id = ? AND message.id IN "
                                                  f"({', '.join('?' * len(chunk))})", account_id, *chunk):
            out[mid] = bodies.body(store, raw, key)
    return out


def newest_message_id(session) -> int:
    """The highest message id given out so far (0: none). On PostgreSQL the id sequence's last
    value: ``message`` is partitioned by account there (primary key ``(account_id, id)``), so
    ``max(id)`` has no index to read and would scan every partition. The sequence may be ahead of
    the committed rows by ids that transactions still open (or rolled back) took: an id at or
    below it was taken before this call, one above it after."""
    if on_sqlite(session):
        return driver_rows(session, "SELECT coalesce(max(id), 0) FROM message")[0][0]
    return driver_rows(session, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM message_id_seq")[0][0]


def insert_messages(session: Session, messages: list[NewMessage],
                    known: dict[tuple[int, str], int] | None = None,
                    counters: dict[int, tuple[int, int]] | None = None) -> list[Delivered]:
    """Insert messages (content once per distinct ``raw`` object) and allocate their UIDs.
    ``known``: (account id, folder name) -> folder id of folders the caller has read in this
    transaction already (not looked up again: a round trip less on PostgreSQL). ``counters``:
    folder id -> (UIDNEXT, HIGHESTMODSEQ) as the caller read them in this transaction, on
    SQLite (whose transaction has held the write lock since its BEGIN IMMEDIATE, so they are
    current): not read again. PostgreSQL reads them locking the rows, whatever is given.

    Runs inside the caller's transaction. On SQLite the transaction holds the write lock
    (BEGIN IMMEDIATE); on PostgreSQL the folder rows are locked (FOR UPDATE), in id order so
    that two writers never deadlock.

    In external mode (store.mode = "external") the messages for people's mailboxes go, in the same
    transaction, to the queue the outbound runner delivers by LMTP (external.divert); their
    Delivered has no folder, UID or message id (0).
    """
    if session.info.get(EXTERNAL_MAILBOXES):
        from .external import divert

        _insert(session, divert(session, messages), known, counters)
        return [Delivered(m.account_id, m.folder_id, m.uid, m.message_id) for m in messages]
    return _insert(session, messages, known, counters)


def _insert(session: Session, messages: list[NewMessage],
            known: dict[tuple[int, str], int] | None = None,
            counters: dict[int, tuple[int, int]] | None = None) -> list[Delivered]:
    if not messages:
        return []
    folders = dict(known or {})
    wanted = {(m.account_id, m.folder) for m in messages} - folders.keys()
    if wanted:
        folders.update(_folder_ids(session, wanted))
    per_folder: dict[int, list[NewMessage]] = defaultdict(list)
    for m in messages:
        m.folder_id = folders[(m.account_id, m.folder)]
        per_folder[m.folder_id].append(m)

    # Content: one row per distinct raw object; COPY points at the existing row.
    contents: dict[int, tuple[bytes, Analyzed, int]] = {}
    staged: dict[int, NewMessage] = {}
    reused: dict[int, int] = defaultdict(int)
    for m in messages:
        if m.reuse_content_id:
            reused[m.reuse_content_id] += 1
            continue
        key = id(m.raw)
        if key not in contents:
            contents[key] = (m.raw, m.analyzed or analyze(m.raw), 0)
            staged[key] = m
        raw, an, refs = contents[key]
        contents[key] = (raw, an, refs + 1)
    keys = list(contents)
    sqlite = session.get_bind().dialect.name == "sqlite"
    content_of = dict(zip(keys, write_contents(session, [contents[k] for k in keys],
                                               [(staged[k].blob_key, staged[k].blob_epoch) for k in keys])))
    if reused:
        ct = Content.__table__
        session.execute(update(ct).where(ct.c.id == bindparam("cid")).values(refcount=ct.c.refcount + bindparam("n")),
                        [{"cid": cid, "n": n} for cid, n in reused.items()],
                        execution_options={"synchronize_session": False})

    # UIDs: lock the folders, read their counters, write them back advanced.
    folder_ids = sorted(per_folder)
    state: dict[int, tuple[int, int]] = {}
    unread = folder_ids
    if sqlite and counters:
        state = {fid: counters[fid] for fid in folder_ids if fid in counters}
        unread = [fid for fid in folder_ids if fid not in state]
    for chunk in _chunks(unread, 900):
        if sqlite:  # the write lock is held already (BEGIN IMMEDIATE): no FOR UPDATE to compile
            rows = driver_rows(session, f"SELECT id, uidnext, highestmodseq FROM folder "
                               f"WHERE id IN ({', '.join('?' * len(chunk))})", *chunk)
        else:
            rows = session.execute(select(Folder.id, Folder.uidnext, Folder.highestmodseq)
                                   .where(Folder.id.in_(chunk)).order_by(Folder.id).with_for_update())
        for fid, uidnext, modseq in rows:
            state[fid] = (uidnext, modseq)
    now = dt.datetime.now(dt.timezone.utc)
    # the rows as the driver takes them (values in MESSAGE_COLUMNS order; on SQLite datetimes as
    # SQLAlchemy stores them there)
    stored_now = sqlite_datetime(now) if sqlite else now
    message_rows: list = []
    folder_updates = []
    for fid in folder_ids:
        uidnext, modseq = state[fid]
        modseq += 1
        size = 0
        for m in per_folder[fid]:
            m.uid = uidnext
            uidnext += 1
            m.content_id = m.reuse_content_id or content_of[id(m.raw)]
            byte_size = m.byte_size
            size += byte_size
            internaldate = m.internaldate and (sqlite_datetime(m.internaldate) if sqlite else m.internaldate)
            message_rows.append((m.account_id, fid, m.uid, modseq, m.flags, m.keywords, internaldate or stored_now,
                                 stored_now, byte_size, m.content_id))
        folder_updates.append({"fid": fid, "uidnext": uidnext, "modseq": modseq, "size": size,
                               "count": len(per_folder[fid])})
    order = [m for fid in folder_ids for m in per_folder[fid]]
    if sqlite:
        ids = sqlite_insert_ids(session, "message", MESSAGE_COLUMNS, message_rows)
        driver_execute(session, "UPDATE folder SET uidnext = ?, highestmodseq = ?, total_size = total_size + ?, "
                       "message_count = message_count + ? WHERE id = ?",
                       [(u["uidnext"], u["modseq"], u["size"], u["count"], u["fid"]) for u in folder_updates])
    else:
        ids = pg_insert_ids(session, "message", MESSAGE_COLUMNS, message_rows)
        t = Folder.__table__
        session.execute(
            update(t).where(t.c.id == bindparam("fid")).values(
                uidnext=bindparam("uidnext"), highestmodseq=bindparam("modseq"),
                total_size=t.c.total_size + bindparam("size"), message_count=t.c.message_count + bindparam("count")),
            folder_updates,
            execution_options={"synchronize_session": False},
        )
    for m, mid in zip(order, ids):
        m.message_id = mid
    announce(session, folder_ids)  # other nodes (PostgreSQL NOTIFY, sent at commit)
    return [Delivered(m.account_id, m.folder_id, m.uid, m.message_id) for m in messages]


def deliver(store: Store, raw: bytes, account_ids: list[int], folder: str = "INBOX",
            quota_default: int | None = None, analyzed: Analyzed | None = None) -> list[Delivered]:
    """Store one message in each account's folder, in one transaction; notify after commit.

    Blocking: call it from a thread executor on the event loop."""
    analyzed = analyzed or analyze(raw)
    messages = [NewMessage(account_id=a, raw=raw, analyzed=analyzed, folder=folder) for a in account_ids]
    bodies.stage(store, messages)
    with store.session() as session:
        if quota_default is not None:
            check_quota(session, messages, quota_default)
        delivered = insert_messages(session, messages)
    store.hub.changed(d.folder_id for d in delivered)
    return delivered

"""Mailbox operations over the store, as IMAP needs them (blocking: call through ``ctx.run``).

Folders are named in Unicode with "/" as the hierarchy separator; the IMAP edge encodes them
(modified UTF-7). Messages are read as Core rows, never ORM objects, and the statements every
client repeats (the folder row, SELECT's pass over the folder, FETCH FLAGS, STORE, EXPUNGE,
``changes_since``) as plain SQL through the driver's cursor (``_driver_rows``), which costs a
fraction of SQLAlchemy's per-statement work: a 100,000-message folder opens in well under a
second. Every write bumps the folder's HIGHESTMODSEQ and the changed messages' MODSEQ, which is
how other sessions (in this process or another) learn what changed; it NOTIFYs other nodes on
PostgreSQL inside its transaction and calls ``notify.hub.changed`` after the commit. On SQLite,
writes share commits (``groupcommit.py``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from array import array
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Sequence

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound, QuotaExceeded, UserError
from .db import Store
from .groupcommit import group_commit
from .mailstore import NewMessage, check_quota, insert_messages
from .models import Account, Content, Folder, Message
from .models.mail import DELETED, SEEN
from .notify import announce, hub

SEP = "/"
F = Folder.__table__
M = Message.__table__
C = Content.__table__

#: (lo, hi) UID ranges, inclusive; how a sequence set reaches the store
UidRanges = Sequence[tuple[int, int]]


class CannotDelete(UserError):
    """INBOX, a special-use folder, or a folder with children."""


@dataclass(frozen=True)
class FolderInfo:
    id: int
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    message_count: int
    total_size: int


@dataclass(frozen=True)
class FolderStatus:
    info: FolderInfo
    unseen: int
    recent: int


@dataclass
class Snapshot:
    """What SELECT returns: the folder's counters and its UIDs in order (sequence number = index + 1)."""

    folder: FolderInfo
    uids: array
    #: messages with a UID above this are \\Recent for this session
    recent_above: int
    recent: int
    first_unseen_uid: int | None
    keywords: set[str]


@dataclass
class Changes:
    highestmodseq: int
    uidnext: int
    #: (uid, flags, keywords) of messages above the session's last known UID
    new: list[tuple[int, int, str | None]]
    #: (uid, flags, keywords) of known messages whose MODSEQ moved
    changed: list[tuple[int, int, str | None]]
    #: every UID now in the folder, only when some were expunged (else None)
    present: array | None


@contextlib.contextmanager
def writing(store: Store) -> Iterator[Session]:
    """A write transaction. On SQLite, writes of this process share commits (groupcommit.py);
    the block's work is durable when the ``with`` statement has finished."""
    if store.dialect != "sqlite":
        with store.session() as session:
            yield session
        return
    with group_commit(store).write() as session:
        yield session


def serialized_writes(store: Store):
    """Queue a write made through another module (``record_login``) with ours."""
    return group_commit(store).exclusive() if store.dialect == "sqlite" else contextlib.nullcontext()


def _info(row) -> FolderInfo:
    return FolderInfo(row.id, row.name, row.special_use, bool(row.subscribed), row.uidvalidity, row.uidnext,
                      row.highestmodseq, row.message_count, row.total_size)


_INFO_COLS = (F.c.id, F.c.name, F.c.special_use, F.c.subscribed, F.c.uidvalidity, F.c.uidnext, F.c.highestmodseq,
              F.c.message_count, F.c.total_size)


def _uid_filter(ranges: UidRanges):
    return or_(*[M.c.uid.between(lo, hi) if lo != hi else M.c.uid == lo for lo, hi in ranges])


_INFO_SQL = "id, name, special_use, subscribed, uidvalidity, uidnext, highestmodseq, message_count, total_size"


def _info_of(t: tuple) -> FolderInfo:
    return FolderInfo(t[0], t[1], t[2], bool(t[3]), t[4], t[5], t[6], t[7], t[8])


def _folder_row(session: Session, account_id: int, name: str, lock: bool = False) -> FolderInfo:
    sql = f"SELECT {_INFO_SQL} FROM folder WHERE account_id = ? AND name = ?"
    if lock and session.get_bind().dialect.name == "postgresql":
        sql += " FOR UPDATE"
    rows = _driver_rows(session, sql, account_id, name)
    if not rows:
        raise NotFound(f"no folder {name}")
    return _info_of(rows[0])


# -- folders --------------------------------------------------------------------------------------
# The reads that every client repeats (LIST, STATUS, the folder row of each write) go through
# the driver's cursor: SQLAlchemy's per-statement work costs more than SQLite's here.

def list_folders(store: Store, account_id: int) -> list[FolderInfo]:
    with store.reader() as s:
        return [_info_of(t) for t in _driver_rows(s, f"SELECT {_INFO_SQL} FROM folder WHERE account_id = ? "
                                                     "ORDER BY name", account_id)]


def folder_status(store: Store, account_id: int, names: Iterable[str] | None = None) -> list[FolderStatus]:
    """Counters of the named folders (all folders when names is None), with UNSEEN and RECENT."""
    with store.reader() as s:
        sql = f"SELECT {_INFO_SQL}, recent_uid FROM folder WHERE account_id = ?"
        params: list = [account_id]
        if names is not None:
            names = list(names)
            if not names:
                return []
            sql += " AND name IN (" + ",".join("?" * len(names)) + ")"
            params += names
        rows = _driver_rows(s, sql + " ORDER BY name", *params)
        if not rows:
            return []
        ids = [r[0] for r in rows]
        marks = ",".join("?" * len(ids))
        unseen = dict(_driver_rows(s, f"SELECT folder_id, count(*) FROM message WHERE folder_id IN ({marks}) "
                                      f"AND (flags & {SEEN}) = 0 GROUP BY folder_id", *ids))
        recent = dict(_driver_rows(s, f"SELECT m.folder_id, count(*) FROM message m JOIN folder f ON f.id = m.folder_id "
                                      f"WHERE m.folder_id IN ({marks}) AND m.uid > f.recent_uid GROUP BY m.folder_id",
                                   *ids))
    return [FolderStatus(_info_of(r), unseen.get(r[0], 0), recent.get(r[0], 0)) for r in rows]


def _new_uidvalidity(session: Session, account_id: int) -> int:
    """Above every UIDVALIDITY the account has used, deleted folders' included (the mark on
    the INBOX row remembers them), so a recreated folder never reuses one."""
    highest = session.scalar(select(func.max(F.c.uidvalidity)).where(F.c.account_id == account_id)) or 0
    mark = session.scalar(select(F.c.uidvalidity_mark).where(F.c.account_id == account_id,
                                                             F.c.name == "INBOX")) or 0
    value = max(int(time.time()) & 0xFFFFFFFF, highest + 1, mark + 1)
    session.execute(update(F).where(F.c.account_id == account_id, F.c.name == "INBOX")
                    .values(uidvalidity_mark=value))
    return value


def _insert_folder(session: Session, account_id: int, name: str) -> None:
    session.execute(F.insert().values(account_id=account_id, name=name, special_use=None, subscribed=True,
                                      uidvalidity=_new_uidvalidity(session, account_id), uidnext=1,
                                      highestmodseq=1, total_size=0, message_count=0, recent_uid=0,
                                      uidvalidity_mark=0,
                                      created_at=dt.datetime.now(dt.timezone.utc)))


def create_folder(store: Store, account_id: int, name: str) -> None:
    """RFC 3501 6.3.3; superior names are created too. Conflict if it exists."""
    name = name.rstrip(SEP)
    if not name or name.upper() == "INBOX" or any(not part for part in name.split(SEP)):
        raise Conflict(f"cannot create {name}")
    with writing(store) as s:
        existing = set(s.scalars(select(F.c.name).where(F.c.account_id == account_id)))
        if name in existing:
            raise Conflict(f"{name} exists")
        parts = name.split(SEP)
        for i in range(1, len(parts) + 1):
            path = SEP.join(parts[:i])
            if path not in existing:
                _insert_folder(s, account_id, path)


def _release_content(session: Session, content_ids: list[int]) -> None:
    """Lower refcounts; delete content nobody points at any more."""
    counts: dict[int, int] = defaultdict(int)
    for cid in content_ids:
        counts[cid] += 1
    if not counts:
        return
    session.execute(update(C).where(C.c.id == bindparam("cid")).values(refcount=C.c.refcount - bindparam("n")),
                    [{"cid": cid, "n": n} for cid, n in counts.items()],
                    execution_options={"synchronize_session": False})
    ids = list(counts)
    for i in range(0, len(ids), 900):
        session.execute(delete(C).where(C.c.id.in_(ids[i:i + 900]), C.c.refcount <= 0))


def delete_folder(store: Store, account_id: int, name: str) -> None:
    """RFC 3501 6.3.4. INBOX, the special-use folders and folders with children stay."""
    if name.upper() == "INBOX":
        raise CannotDelete("INBOX cannot be deleted")
    with writing(store) as s:
        row = _folder_row(s, account_id, name)
        if row.special_use:
            raise CannotDelete(f"{name} is a special-use folder")
        if s.scalar(select(func.count()).where(F.c.account_id == account_id, F.c.name.startswith(name + SEP,
                                                                                                   autoescape=True))):
            raise CannotDelete(f"{name} has child folders")
        content_ids = list(s.scalars(select(M.c.content_id).where(M.c.folder_id == row.id)))
        s.execute(delete(M).where(M.c.folder_id == row.id))
        _release_content(s, content_ids)
        s.execute(delete(F).where(F.c.id == row.id))
        announce(s, [row.id])
    hub.changed([row.id])


def rename_folder(store: Store, account_id: int, old: str, new: str) -> None:
    """RFC 3501 6.3.5: children move along; renaming INBOX moves its messages to a new folder
    and leaves INBOX empty."""
    new = new.rstrip(SEP)
    if not new or new.upper() == "INBOX" or any(not p for p in new.split(SEP)):
        raise Conflict(f"cannot rename to {new}")
    moved_folders: list[int] = []
    with writing(store) as s:
        names = set(s.scalars(select(F.c.name).where(F.c.account_id == account_id)))
        if new in names:
            raise Conflict(f"{new} exists")
        is_inbox = old.upper() == "INBOX"
        row = _folder_row(s, account_id, "INBOX" if is_inbox else old, lock=True)
        if new.startswith(row.name + SEP):
            raise Conflict("cannot rename a folder into itself")
        parts = new.split(SEP)
        for i in range(1, len(parts)):
            if SEP.join(parts[:i]) not in names:
                _insert_folder(s, account_id, SEP.join(parts[:i]))
        if is_inbox:
            _insert_folder(s, account_id, new)
            target = _folder_row(s, account_id, new)
            uids = list(s.execute(select(M.c.uid, M.c.content_id, M.c.size, M.c.flags, M.c.keywords, M.c.internaldate)
                                  .where(M.c.folder_id == row.id).order_by(M.c.uid)))
            _copy_rows(s, account_id, uids, new)
            _remove(s, row.id, [u.uid for u in uids], release=False)
            moved_folders = [row.id, target.id]
        else:
            s.execute(update(F).where(F.c.id == row.id).values(name=new))
            children = s.execute(select(F.c.id, F.c.name).where(F.c.account_id == account_id,
                                                                F.c.name.startswith(old + SEP, autoescape=True))).all()
            for cid, cname in children:
                s.execute(update(F).where(F.c.id == cid).values(name=new + cname[len(old):]))
            moved_folders = [row.id] + [c[0] for c in children]
        announce(s, moved_folders)
    hub.changed(moved_folders)


def set_subscribed(store: Store, account_id: int, name: str, subscribed: bool) -> None:
    with writing(store) as s:
        row = _folder_row(s, account_id, name)
        s.execute(update(F).where(F.c.id == row.id).values(subscribed=subscribed))


def find_folder(store: Store, account_id: int, name: str) -> FolderInfo:
    with store.reader() as s:
        return _folder_row(s, account_id, name)


# -- a selected folder ----------------------------------------------------------------------------

def select_folder(store: Store, account_id: int, name: str, readonly: bool) -> Snapshot:
    """RFC 3501 6.3.1/6.3.2. SELECT (not EXAMINE) claims the \\Recent messages for this session."""
    with store.reader() as s:
        row = s.execute(select(*_INFO_COLS, F.c.recent_uid)
                        .where(F.c.account_id == account_id, F.c.name == name)).first()
        if row is None:
            raise NotFound(f"no folder {name}")
        uids = array("q")
        first_unseen = None
        keywords: set[str] = set()
        # One pass over the folder through the driver's cursor: 100,000 rows through Core's
        # row objects cost more than the query itself.
        for uid, flags, kws in _driver_rows(s, "SELECT uid, flags, keywords FROM message WHERE folder_id = ? "
                                               "ORDER BY uid", row.id):
            uids.append(uid)
            if first_unseen is None and not flags & SEEN:
                first_unseen = uid
            if kws:
                keywords.update(kws.split())
    info = _info(row)
    if readonly:
        return Snapshot(info, uids, 1 << 62, 0, first_unseen, keywords)
    recent_above = row.recent_uid
    if uids and uids[-1] > recent_above:
        # Only the first session to see a message gets it as \Recent: claim under the lock.
        recent_above = max(recent_above, claim_recent(store, row.id, uids[-1]))
    recent = len(uids) - bisect_right(uids, recent_above)
    return Snapshot(info, uids, recent_above, recent, first_unseen, keywords)


def _driver_rows(session: Session, sql: str, *params) -> list[tuple]:
    """Rows of a plain SQL query ("?" placeholders), read with the DBAPI cursor in the session's
    transaction."""
    conn = session.connection()
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _driver_execute(session: Session, sql: str, rows: list[tuple]) -> None:
    """executemany of a plain SQL statement ("?" placeholders) in the session's transaction."""
    conn = session.connection()
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _uid_sql(ranges: UidRanges) -> tuple[str, list[int]]:
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


def claim_recent(store: Store, folder_id: int, up_to_uid: int) -> int:
    """A session saw new messages first: they are \\Recent for it, and no later session.
    Returns the previous mark (messages above it are this session's)."""
    with writing(store) as s:
        before = s.scalar(select(F.c.recent_uid).where(F.c.id == folder_id).with_for_update())
        if before is None:
            return up_to_uid
        if up_to_uid > before:
            s.execute(update(F).where(F.c.id == folder_id).values(recent_uid=up_to_uid))
        return before


def changes_since(store: Store, folder_id: int, modseq: int, known_max_uid: int, known_count: int,
                  force: bool = False) -> Changes | None:
    """What happened in a folder since a session last looked (None: the folder is gone).
    ``force``: look for expunges even if the MODSEQ did not move (ones deferred earlier)."""
    # Runs after most commands of every session: plain SQL through the driver's cursor.
    with store.reader() as s:
        found = _driver_rows(s, "SELECT highestmodseq, uidnext, message_count FROM folder WHERE id = ?", folder_id)
        if not found:
            return None
        highest, uidnext, count = found[0]
        if highest == modseq and not (force and count < known_count):
            return Changes(modseq, uidnext, [], [], None)
        rows = _driver_rows(s, "SELECT uid, flags, keywords FROM message WHERE folder_id = ? AND modseq > ? "
                               "ORDER BY uid", folder_id, modseq)
        new = [tuple(r) for r in rows if r[0] > known_max_uid]
        changed = [tuple(r) for r in rows if r[0] <= known_max_uid]
        present = None
        # Expunges only lower the count, so a count below known + new means some went.
        if count < known_count + len(new):
            present = array("q", (r[0] for r in _driver_rows(
                s, "SELECT uid FROM message WHERE folder_id = ? ORDER BY uid", folder_id)))
    return Changes(highest, uidnext, new, changed, present)


def fetch_rows(store: Store, folder_id: int, lo_uid: int, hi_uid: int, limit: int, columns: Sequence[str],
               uids: UidRanges | None = None) -> list:
    """Up to ``limit`` message rows with lo_uid <= uid <= hi_uid, in UID order (keyset paging)."""
    cols = [M.c.uid] + [C.c[c] if c in ("raw", "envelope", "body", "bodystructure", "header_size", "search_text")
                        else M.c[c] for c in columns]
    q = select(*cols).where(M.c.folder_id == folder_id, M.c.uid.between(lo_uid, hi_uid))
    if uids:
        q = q.where(_uid_filter(uids))
    if any(c.table is C for c in cols):
        q = q.select_from(M.join(C, C.c.id == M.c.content_id))
    with store.reader() as s:
        if tuple(columns) == ("flags", "keywords") and not uids:
            # Opening a big folder (UID FETCH 1:* (FLAGS)): plain tuples from the driver.
            return _driver_rows(s, "SELECT uid, flags, keywords FROM message WHERE folder_id = ? AND uid >= ? "
                                   "AND uid <= ? ORDER BY uid LIMIT ?", folder_id, lo_uid, hi_uid, limit)
        return s.execute(q.order_by(M.c.uid).limit(limit)).all()


def message_raw(store: Store, folder_id: int, uid: int) -> bytes:
    """The raw bytes of one message (b"" if it is gone)."""
    with store.reader() as s:
        raw = s.scalar(select(C.c.raw).select_from(M.join(C, C.c.id == M.c.content_id))
                       .where(M.c.folder_id == folder_id, M.c.uid == uid))
    return raw or b""


def _bump(session: Session, folder_id: int, **counters) -> int:
    """Raise the folder's HIGHESTMODSEQ (and apply counter changes) in one statement; on
    PostgreSQL the UPDATE also locks the row for the rest of the transaction."""
    modseq = session.execute(update(F).where(F.c.id == folder_id)
                             .values(highestmodseq=F.c.highestmodseq + 1, **counters)
                             .returning(F.c.highestmodseq)).scalar()
    if modseq is None:
        raise NotFound("folder is gone")
    return modseq


@dataclass
class Stored:
    #: (uid, flags, keywords) of every message addressed, changed or not
    rows: list[tuple[int, int, str | None]]
    #: the folder's HIGHESTMODSEQ before and after this write: a session that had seen
    #: ``before`` has now seen ``after`` too (its own change needs no second report)
    modseq_before: int
    modseq_after: int


def store_flags(store: Store, folder_id: int, uids: UidRanges, mode: str, bits: int,
                keywords: Sequence[str]) -> Stored:
    """RFC 3501 6.4.6: mode "+", "-" or "" (replace)."""
    if not uids:
        return Stored([], 0, 0)
    out: list[tuple[int, int, str | None]] = []
    kw = set(keywords)
    with writing(store) as s:
        modseq = _bump(s, folder_id)
        where, params = _uid_sql(uids)
        rows = _driver_rows(s, f"SELECT id, uid, flags, keywords FROM message WHERE folder_id = ? AND {where} "
                               "ORDER BY uid", folder_id, *params)
        updates = []
        for mid, uid, flags, kws in rows:
            have = set(kws.split()) if kws else set()
            if mode == "+":
                nflags, nkw = flags | bits, have | kw
            elif mode == "-":
                nflags, nkw = flags & ~bits, have - kw
            else:
                nflags, nkw = bits, set(kw)
            nkws = " ".join(sorted(nkw)) or None
            if nflags != flags or nkw != have:
                updates.append((nflags, nkws, modseq, mid))
            out.append((uid, nflags, nkws))
        if updates:
            _driver_execute(s, "UPDATE message SET flags = ?, keywords = ?, modseq = ? WHERE id = ?", updates)
            announce(s, [folder_id])
    if updates:
        hub.changed([folder_id])
    return Stored(out, modseq - 1, modseq)


def _remove(session: Session, folder_id: int, uids: list[int], release: bool = True) -> None:
    """Delete these messages from a folder and fix its counters (caller's transaction)."""
    if not uids:
        return
    content_ids: list[int] = []
    size = 0
    for i in range(0, len(uids), 900):
        chunk = uids[i:i + 900]
        for cid, sz in session.execute(select(M.c.content_id, M.c.size).where(M.c.folder_id == folder_id,
                                                                              M.c.uid.in_(chunk))):
            content_ids.append(cid)
            size += sz
        session.execute(delete(M).where(M.c.folder_id == folder_id, M.c.uid.in_(chunk)))
    _bump(session, folder_id, message_count=F.c.message_count - len(content_ids), total_size=F.c.total_size - size)
    if release:
        _release_content(session, content_ids)
    announce(session, [folder_id])


def expunge(store: Store, folder_id: int, uids: UidRanges | None = None) -> list[int]:
    """RFC 3501 6.4.3 / RFC 4315 UID EXPUNGE: remove the \\Deleted messages; their UIDs, ascending."""
    with writing(store) as s:
        where, params = _uid_sql(uids) if uids else ("1 = 1", [])
        gone = [r[0] for r in _driver_rows(s, f"SELECT uid FROM message WHERE folder_id = ? AND (flags & {DELETED}) "
                                              f"!= 0 AND {where} ORDER BY uid", folder_id, *params)]
        _remove(s, folder_id, gone)
    if gone:
        hub.changed([folder_id])
    return gone


def _copy_rows(session: Session, account_id: int, rows, dest: str) -> list[int]:
    news = [NewMessage(account_id=account_id, raw=b"", folder=dest, flags=r.flags, keywords=r.keywords,
                       internaldate=r.internaldate, reuse_content_id=r.content_id, size=r.size) for r in rows]
    insert_messages(session, news)
    return [m.uid for m in news]


@dataclass(frozen=True)
class Copied:
    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]
    dest_folder_id: int


def copy_messages(store: Store, account_id: int, folder_id: int, uids: UidRanges, dest: str, move: bool,
                  quota_default: int) -> Copied:
    """RFC 3501 6.4.7 COPY, RFC 6851 MOVE; UIDs for RFC 4315 COPYUID. Quota counts copies."""
    with writing(store) as s:
        target = _folder_row(s, account_id, dest)
        rows = s.execute(select(M.c.uid, M.c.content_id, M.c.size, M.c.flags, M.c.keywords, M.c.internaldate)
                         .where(M.c.folder_id == folder_id, _uid_filter(uids)).order_by(M.c.uid)).all() if uids else []
        if not move:
            check_quota(s, [NewMessage(account_id, b"", reuse_content_id=1, size=sum(r.size for r in rows))],
                        quota_default)
        dest_uids = _copy_rows(s, account_id, rows, dest)
        if move:
            _remove(s, folder_id, [r.uid for r in rows], release=False)
    hub.changed([target.id, folder_id])
    return Copied(target.uidvalidity, [r.uid for r in rows], dest_uids, target.id)


class Appended(NamedTuple):
    uidvalidity: int
    uid: int
    #: the appending session holds the new message as \\Recent (it asked to, and every
    #: earlier message had been claimed already)
    recent: bool


def append_message(store: Store, account_id: int, folder: str, raw: bytes, flags: int, keywords: str | None,
                   internaldate: dt.datetime | None, quota_default: int, claim_recent: bool = False) -> Appended:
    """RFC 3501 6.3.11 with RFC 4315 APPENDUID, after the commit. ``claim_recent``: the caller
    has this folder selected; claiming in the same transaction saves a second write."""
    with writing(store) as s:
        target = _folder_row(s, account_id, folder)
        if internaldate is not None:  # stored in UTC: SQLite keeps no offset
            internaldate = internaldate.astimezone(dt.timezone.utc)
        message = NewMessage(account_id=account_id, raw=raw, folder=folder, flags=flags, keywords=keywords,
                             internaldate=internaldate)
        check_quota(s, [message], quota_default)
        insert_messages(s, [message])
        recent = False
        if claim_recent:
            recent = s.execute(update(F).where(F.c.id == target.id, F.c.recent_uid == message.uid - 1)
                               .values(recent_uid=message.uid)).rowcount == 1
    hub.changed([target.id])
    return Appended(target.uidvalidity, message.uid, recent)


def quota_usage(store: Store, account_id: int, quota_default: int) -> tuple[int, int]:
    """RFC 2087: (bytes used, byte limit) of the account."""
    with store.reader() as s:
        used = s.scalar(select(func.coalesce(func.sum(F.c.total_size), 0)).where(F.c.account_id == account_id))
        limit = s.scalar(select(Account.quota_bytes).where(Account.id == account_id))
    return int(used or 0), int(limit or quota_default)


__all__ = ["FolderInfo", "FolderStatus", "Snapshot", "Changes", "Copied", "CannotDelete", "QuotaExceeded", "SEP",
           "list_folders", "folder_status", "create_folder", "delete_folder", "rename_folder", "set_subscribed",
           "find_folder", "select_folder", "claim_recent", "changes_since", "fetch_rows", "message_raw", "store_flags", "expunge",
           "copy_messages", "append_message", "Appended", "quota_usage"]

"""The selected folder's side of the mailbox store: SELECT's snapshot, \\Recent, what changed
since a session last looked, FETCH rows, STORE, EXPUNGE, COPY/MOVE, APPEND and QUOTA
(blocking: call through ``ctx.run``). See ``mailboxes.py`` for how reads and writes are made."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple, Sequence

from ..errors import NotFound, QuotaExceeded
from ..mime import analyze
from . import bodies
from .db import Store
from .driver import driver_execute, driver_rows, raw_reader, read_rows
from .api import (Appended, AppendedMany, PreparedAppend, Changes, Copied, NewMessage, QuotaUsage, Snapshot, Stored,
                  ToAppend, UidRanges)
from .mailbox_sql import folder_row, info_of, INFO_SQL, uid_sql, bump_modseq, remove_messages, copy_rows, writing
from .leaves import on_table
from .pgselect import CHANGES_SQL, changes_rows, snapshot_rows
from .mailstore import check_quota, insert_messages, over_quota, quota_usage_of
from .models.mail import DELETED, SEEN


# -- a selected folder ----------------------------------------------------------------------------

def select_folder(store: Store, account_id: int, name: str, readonly: bool, claim: bool = True) -> Snapshot:
    """RFC 3501 6.3.1/6.3.2. Both count the \\Recent messages; SELECT (not EXAMINE) claims them
    for this session, here or (``claim`` false: this reads only) in ``claim_snapshot``."""
    with raw_reader(store) as s:
        if not s.qmark:  # PostgreSQL: both reads in one round trip
            found, rows = snapshot_rows(s.dbapi, account_id, name, store.message_table(account_id))
        else:
            found = next(iter(driver_rows(s, f"SELECT {INFO_SQL}, recent_uid FROM folder WHERE account_id = ? "
                                             "AND name = ?", account_id, name)), None)
            rows = [] if found is None else driver_rows(s, "SELECT uid, flags, keywords FROM message "
                                                           "WHERE account_id = ? AND folder_id = ? ORDER BY uid",
                                                        account_id, found[0])
    if found is None:
        raise NotFound(f"no folder {name}")
    info, recent_uid = info_of(found), found[-1]
    uids = array("q")
    first_unseen = None
    keywords: set[str] = set()
    # One pass over the folder's rows as the driver gives them: 100,000 rows through Core's
    # row objects cost more than the query itself.
    for uid, flags, kws in rows:
        uids.append(uid)
        if first_unseen is None and not flags & SEEN:
            first_unseen = uid
        if kws:
            keywords.update(kws.split())
    snap = Snapshot(info, uids, recent_uid, len(uids) - bisect_right(uids, recent_uid), first_unseen, keywords)
    # EXAMINE counts them without claiming them (RFC 3501 6.3.2: no change to the mailbox's
    # state, and a later SELECT still gets them as \Recent)
    return claim_snapshot(store, snap) if claim and not readonly and snap.unclaimed else snap


def claim_snapshot(store: Store, snap: Snapshot) -> Snapshot:
    """SELECT's claim of the messages above the folder's \\Recent mark: only the first session
    to see a message gets it as \\Recent (claimed under the write lock)."""
    uids = snap.uids
    recent_above = max(snap.recent_above, claim_recent(store, snap.folder.id, uids[-1]))
    return dataclasses.replace(snap, recent_above=recent_above, recent=len(uids) - bisect_right(uids, recent_above))


def claim_recent(store: Store, folder_id: int, up_to_uid: int) -> int:
    """A session saw new messages first: they are \\Recent for it, and no later session.
    Returns the previous mark (messages above it are this session's)."""
    with writing(store) as s:
        lock = " FOR UPDATE" if store.dialect == "postgresql" else ""  # SQLite: the write lock is held
        found = driver_rows(s, f"SELECT recent_uid FROM folder WHERE id = ?{lock}", folder_id)
        if not found:
            return up_to_uid
        before = found[0][0]
        if up_to_uid > before:
            driver_execute(s, "UPDATE folder SET recent_uid = ? WHERE id = ?", [(up_to_uid, folder_id)])
        return before


def changes_since(store: Store, account_id: int, folder_id: int, modseq: int, known_max_uid: int, known_count: int,
                  force: bool = False) -> Changes | None:
    """What happened in a folder since a session last looked (None: the folder is gone).
    ``force``: look for expunges even if the MODSEQ did not move (ones deferred earlier)."""
    # Runs after most commands of every session: plain SQL through the driver's cursor, the
    # folder's row and its messages changed since ``modseq`` in one statement (one round trip
    # on PostgreSQL; none of them when nothing changed: the index of "folder_id, modseq > n").
    # On PostgreSQL, with ``force`` (expunges looked for: after an EXPUNGE, or ones deferred),
    # the folder's UIDs come in the same round trip when some left it (``pgselect``); without,
    # the pipeline's own cost (psycopg's pipeline mode) is not paid on the look after every write.
    table = store.message_table(account_id)
    sql = _changes_sql(table)
    if not force:
        # The usual case, a look for no expunge in particular: the one statement alone
        # (read_rows, without a transaction of its own). If some messages left after all, the
        # folder's UIDs are read with it in one transaction below (its statement again), so
        # that they agree; so is every look for expunges (``force``: after an EXPUNGE).
        found = read_rows(store, sql, account_id, modseq, folder_id, account_id)
        got = _changes_of(found, None, modseq, known_max_uid, known_count, force)
        if got is not _UIDS_NEEDED:
            return got
    with raw_reader(store) as s:
        if s.qmark or not force:
            found, uids = driver_rows(s, sql, account_id, modseq, folder_id, account_id), None
        else:
            found, uids = changes_rows(s.dbapi, account_id, folder_id, modseq, known_max_uid, known_count, table)
        present = None if uids is None else array("q", (r[0] for r in uids))
        got = _changes_of(found, present, modseq, known_max_uid, known_count, force)
        if got is _UIDS_NEEDED:
            present = array("q", (r[0] for r in driver_rows(
                s, f"SELECT uid FROM {table} WHERE account_id = ? AND folder_id = ? ORDER BY uid", account_id,
                folder_id)))
            got = _changes_of(found, present, modseq, known_max_uid, known_count, force)
    return got


#: ``_changes_of``: some messages left the folder, and the UIDs it holds are needed to tell which
_UIDS_NEEDED = object()


def _changes_of(found: list[tuple], present: array | None, modseq: int, known_max_uid: int, known_count: int,
                force: bool) -> "Changes | None | object":
    """``changes_since``'s answer from CHANGES_SQL's rows and the folder's UIDs if read, or
    _UIDS_NEEDED if they were not and some messages left."""
    if not found:
        return None
    highest, uidnext, count, recent_uid = found[0][:4]
    if highest == modseq and not (force and count < known_count):
        return Changes(modseq, uidnext, [], [], None, recent_uid)
    rows = [r[4:] for r in found if r[4] is not None]
    new = [tuple(r) for r in rows if r[0] > known_max_uid]
    # Expunges only lower the count, so a count below known + new means some went.
    if present is None and count < known_count + len(new):
        return _UIDS_NEEDED
    changed = [tuple(r) for r in rows if r[0] <= known_max_uid]
    return Changes(highest, uidnext, new, changed, present, recent_uid)


@functools.lru_cache(maxsize=64)
def _changes_sql(table: str) -> str:
    """``CHANGES_SQL`` on ``table`` with "?" placeholders (``driver_rows``' own), made once a table."""
    return on_table(CHANGES_SQL, table).replace("%s", "?")


def vanished_since(store: Store, account_id: int, folder_id: int, modseq: int, ranges: UidRanges | None,
                   still_seen: Sequence[int] = ()) -> list[tuple[int, int]]:
    """UID ranges, ascending, of the messages within ``ranges`` (None: any UID) that left the
    folder after ``modseq`` (RFC 7162 3.2.5, 3.2.6 VANISHED (EARLIER)), from the tombstones.
    Where they do not reach back that far (the folder's ``tombstone_floor`` is above
    ``modseq``), every UID below UIDNEXT in ``ranges`` that is not present (3.2.5.2: always
    correct). UIDs in ``still_seen`` (ascending: the session's view, whose expunges it is told
    of as they happen) are left out."""
    with raw_reader(store) as s:
        found = driver_rows(s, "SELECT uidnext, tombstone_floor FROM folder WHERE id = ?", folder_id)
        if not found:
            return []
        uidnext, floor = found[0]
        spans = [(lo, min(hi, uidnext - 1)) for lo, hi in (ranges or [(1, uidnext - 1)]) if lo <= uidnext - 1]
        if not spans:
            return []
        if modseq >= floor:
            gone = sorted({r[0] for r in driver_rows(s, "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ?",
                                                     folder_id, modseq)})
            out: list[tuple[int, int]] = []
            for uid in gone:
                i = bisect_right(spans, (uid, 1 << 62)) - 1
                if i < 0 or spans[i][1] < uid or _holds(still_seen, uid):
                    continue
                if out and out[-1][1] == uid - 1:
                    out[-1] = (out[-1][0], uid)
                else:
                    out.append((uid, uid))
            return out
        present = sorted({r[0] for r in driver_rows(s, "SELECT uid FROM message WHERE account_id = ? AND folder_id = ?",
                                                    account_id, folder_id)}
                         .union(still_seen))
    out = []
    for lo, hi in spans:
        i = bisect_left(present, lo)
        cur = lo
        while i < len(present) and present[i] <= hi:
            if present[i] > cur:
                out.append((cur, present[i] - 1))
            cur = present[i] + 1
            i += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def _holds(ascending: Sequence[int], uid: int) -> bool:
    i = bisect_left(ascending, uid)
    return i < len(ascending) and ascending[i] == uid


_FLAG_COLUMNS = (("flags", "keywords"), ("flags", "keywords", "modseq"))
_CONTENT_COLUMNS = frozenset(("raw", "envelope", "body", "bodystructure", "header_size", "search_text", "header",
                              "preview"))


#: columns the driver returns as text on SQLite (SQLAlchemy's DateTime format), as datetime on PostgreSQL
_DATE_COLUMNS = frozenset(("internaldate", "savedate"))


@functools.lru_cache(maxsize=256)
def _fetch_sql(columns: tuple[str, ...], ranges: int, changedsince: bool, within: bool = False,
               table: str = "message") -> tuple[str, type]:
    """The plain SQL of ``fetch_rows`` for these columns, ``ranges`` UID ranges (a single
    value or BETWEEN each), with or without CHANGEDSINCE and the bound of ``within`` (no row
    when the messages between the two UIDs are more or bigger: a one-time filter, read before
    any row), and the row type it makes: built once per shape, so no query is composed or
    compiled per FETCH. ``table``: the account's messages' (``Store.message_table``), named
    ``message`` in the statement."""
    names = ["message.uid"]
    for c in columns:
        if c == "header":  # bytes 1 .. header_size: substr works on BLOB (SQLite) and bytea (PostgreSQL)
            names.append("substr(content.raw, 1, content.header_size)")
        else:
            names.append(f"content.{c}" if c in _CONTENT_COLUMNS else f"message.{c}")
    if "raw" in columns or "header" in columns:  # bodies in the blob store: read by key (``_bodies``)
        names += ["content.blob_key", "content.header_size"]
    join = " JOIN content ON content.id = message.content_id" if any(c in _CONTENT_COLUMNS for c in columns) else ""
    where = "message.account_id = ? AND message.folder_id = ? AND message.uid >= ? AND message.uid <= ?"
    if ranges:
        where += " AND (" + " OR ".join(["message.uid BETWEEN ? AND ?"] * ranges) + ")"
    if changedsince:
        where += " AND message.modseq > ?"
    if within:
        where += f" AND (SELECT count(*) <= ? AND coalesce(sum(size), 0) <= ? {on_table(_RANGE_OF, table)})"
    named = "message" if table == "message" else f"{table} AS message"
    sql = f"SELECT {', '.join(names)} FROM {named}{join} WHERE {where} ORDER BY message.uid LIMIT ?"
    return sql, collections.namedtuple("FetchRow", ("uid",) + columns)


def _as_datetime(value):
    return value if value is None or isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


#: the messages between two UIDs of a folder (``fetch_rows``' ``within``): how many, and their bytes in all
_RANGE_OF = "FROM {message} WHERE account_id = ? AND folder_id = ? AND uid >= ? AND uid <= ?"
RANGE_SIZE_SQL = f"SELECT count(*), coalesce(sum(size), 0) {_RANGE_OF}"


def fetch_rows(store: Store, account_id: int, folder_id: int, lo_uid: int, hi_uid: int, limit: int, columns: Sequence[str],
               uids: UidRanges | None = None, changedsince: int | None = None,
               within: tuple[int, int] | None = None) -> list | None:
    """Up to ``limit`` message rows with lo_uid <= uid <= hi_uid, in UID order (keyset paging);
    ``changedsince``: only those whose MODSEQ is above it (RFC 7162 CHANGEDSINCE); ``within``
    (messages, bytes): None instead if the messages between the two UIDs are more or bigger
    (``RANGE_SIZE_SQL``, read when no row was found within them). The column
    ``header`` is the raw header alone (what SEARCH HEADER and SENTBEFORE read), not the message.
    Rows are named tuples (``row.uid``, ``row.flags``...), except for FLAGS alone (with or
    without MODSEQ), the hot path of opening a big folder: plain tuples."""
    columns = tuple(columns)
    ranges = list(uids or ())
    table = store.message_table(account_id)
    sql, row_type = _fetch_sql(columns, len(ranges), changedsince is not None, within is not None, table)
    params = [account_id, folder_id, lo_uid, hi_uid, *(u for r in ranges for u in r)]
    if changedsince is not None:
        params.append(changedsince)
    if within is not None:
        params += [*within, account_id, folder_id, lo_uid, hi_uid]
    rows = read_rows(store, sql, *params, limit)
    # None there, or over the bound: the size tells. Asked only then, by a statement of its
    # own: pipelined with the rows on PostgreSQL (one round trip for both) it cost 60 us more
    # of our CPU on every FETCH than the one statement (docs/benchmarks.md, branch pgclient),
    # to save a round trip on the rare FETCH that finds nothing or goes to the heavy lane. Its
    # own read (read_rows), not the rows' snapshot: what it decides is only where the FETCH is
    # read (here, or again on the heavy lane), and either is right for a range that changed.
    if within is not None and not rows:
        count, total = read_rows(store, on_table(RANGE_SIZE_SQL, table), account_id, folder_id, lo_uid, hi_uid)[0]
        if count > within[0] or total > within[1]:
            return None
    if columns in _FLAG_COLUMNS and not uids:
        return rows
    dates = [i + 1 for i, c in enumerate(columns) if c in _DATE_COLUMNS]
    if "raw" in columns or "header" in columns:
        rows = _bodies(store, columns, rows)
    if dates:
        rows = [list(row) for row in rows]
        for row in rows:
            for i in dates:
                row[i] = _as_datetime(row[i])
    return [row_type._make(row) for row in rows]


def _bodies(store: Store, columns: tuple[str, ...], rows: list) -> list:
    """Rows with the trailing blob key and header size that ``_fetch_sql`` adds for "raw" and
    "header": the bytes of the bodies in the blob store filled in, the two columns cut off."""
    rows = [list(row) for row in rows]
    key_at = len(columns) + 1
    for name, header_size_at in (("raw", None), ("header", key_at + 1)):
        if name in columns:
            bodies.fill(store, rows, columns.index(name) + 1, key_at, header_size_at)
    return [row[:key_at] for row in rows]


def message_raw(store: Store, account_id: int, folder_id: int, uid: int) -> bytes:
    """The raw bytes of one message (b"" if it is gone)."""
    rows = read_rows(store, "SELECT content.raw, content.blob_key FROM message JOIN content "
                            "ON content.id = message.content_id WHERE message.account_id = ? "
                            "AND message.folder_id = ? AND message.uid = ?", account_id, folder_id, uid)
    return bodies.body(store, *rows[0]) if rows else b""


def store_flags(store: Store, account_id: int, folder_id: int, uids: UidRanges, mode: str, bits: int,
                keywords: Sequence[str], unchangedsince: int | None = None) -> Stored:
    """RFC 3501 6.4.6: mode "+", "-" or "" (replace). With ``unchangedsince`` (RFC 7162
    UNCHANGEDSINCE), a message whose MODSEQ is above it is not changed but listed in
    ``modified``. A message whose flags do not change keeps its MODSEQ, and a STORE that
    changes nothing leaves the folder's HIGHESTMODSEQ where it was. On PostgreSQL in two
    pipelined round trips (``pgflags``)."""
    if not uids:
        return Stored([], 0, 0)
    change = FlagChange(mode, bits, frozenset(keywords), unchangedsince)
    if store.dialect == "postgresql":
        from .pgflags import store_flags_pg

        return store_flags_pg(store, account_id, folder_id, uids, change)
    with writing(store) as s:
        # SQLite's write transaction holds the database's write lock from BEGIN IMMEDIATE, so
        # the MODSEQ is taken only when something changes.
        where, params = uid_sql(uids)
        rows = driver_rows(s, f"SELECT id, uid, flags, keywords, modseq FROM message WHERE account_id = ? "
                              f"AND folder_id = ? AND {where} ORDER BY uid", account_id, folder_id, *params)
        out, modified, changes = change.apply(rows)
        if changes:
            modseq = bump_modseq(s, folder_id)
            driver_execute(s, "UPDATE message SET flags = ?, keywords = ?, modseq = ? WHERE account_id = ? AND id = ?",
                           [(nflags, nkws, modseq, account_id, mid) for nflags, nkws, mid, _ in changes])
            for _, _, _, i in changes:
                out[i] = out[i][:3] + (modseq,)
    if changes:
        store.hub.changed([folder_id])
        return Stored(out, modseq - 1, modseq, modified)
    return Stored(out, 0, 0, modified)


class FlagChange(NamedTuple):
    """What a STORE asks for: ``mode`` "+", "-" or "" (replace), the flag bits and keywords,
    RFC 7162's UNCHANGEDSINCE."""
    mode: str
    bits: int
    keywords: frozenset[str]
    unchangedsince: int | None

    def apply(self, rows) -> tuple[list[tuple[int, int, str | None, int]], list[int], list[tuple]]:
        """For rows (id, uid, flags, keywords, modseq) in UID order: (uid, flags, keywords,
        modseq) of each row after the change (the old MODSEQ still), the UIDs refused by
        UNCHANGEDSINCE, and (flags, keywords, id, index in the first list) of the rows that
        change."""
        out: list[tuple[int, int, str | None, int]] = []
        modified: list[int] = []
        changes = []
        mode, bits, kw = self.mode, self.bits, self.keywords
        for mid, uid, flags, kws, old_modseq in rows:
            if self.unchangedsince is not None and old_modseq > self.unchangedsince:
                modified.append(uid)
                continue
            have = set(kws.split()) if kws else set()
            if mode == "+":
                nflags, nkw = flags | bits, have | kw
            elif mode == "-":
                nflags, nkw = flags & ~bits, have - kw
            else:
                nflags, nkw = bits, set(kw)
            nkws = " ".join(sorted(nkw)) or None
            if nflags != flags or nkw != have:
                changes.append((nflags, nkws, mid, len(out)))
            out.append((uid, nflags, nkws, old_modseq))
        return out, modified, changes


def expunge(store: Store, account_id: int, folder_id: int, uids: UidRanges | None = None) -> list[int]:
    """RFC 3501 6.4.3 / RFC 4315 UID EXPUNGE: remove the \\Deleted messages; their UIDs, ascending.
    On PostgreSQL in two pipelined round trips (``pgexpunge``)."""
    if store.dialect == "postgresql":
        from .pgexpunge import expunge_pg

        return expunge_pg(store, account_id, folder_id, uids)
    with writing(store) as s:
        where, params = uid_sql(uids) if uids else ("1 = 1", [])
        rows = driver_rows(s, f"SELECT uid, content_id, size FROM message WHERE account_id = ? AND folder_id = ? AND "
                              f"(flags & {DELETED}) != 0 AND {where} ORDER BY uid", account_id, folder_id, *params)
        gone = [r[0] for r in rows]
        remove_messages(s, account_id, folder_id, gone, rows=rows)  # the rows read once
    if gone:
        store.hub.changed([folder_id])
    return gone


class _CopyRow(NamedTuple):
    uid: int
    content_id: int
    size: int
    flags: int
    keywords: str | None
    internaldate: dt.datetime | None


def copy_messages(store: Store, account_id: int, folder_id: int, uids: UidRanges, dest: str, move: bool,
                  quota_default: int) -> Copied:
    """RFC 3501 6.4.7 COPY, RFC 6851 MOVE; UIDs for RFC 4315 COPYUID. Quota counts copies."""
    with writing(store) as s:
        target = folder_row(s, account_id, dest)
        rows = []
        if uids:
            where, params = uid_sql(uids)
            rows = [_CopyRow(uid, cid, size, flags, kws, _as_datetime(date)) for uid, cid, size, flags, kws, date in
                    driver_rows(s, f"SELECT uid, content_id, size, flags, keywords, internaldate FROM message "
                                   f"WHERE account_id = ? AND folder_id = ? AND {where} ORDER BY uid",
                                   account_id, folder_id, *params)]
        if not move:
            if over_quota(s, [(sum(r.size for r in rows), (account_id,))], quota_default):
                raise QuotaExceeded(f"mailbox of account {account_id} is over its quota")
        dest_uids = copy_rows(s, account_id, rows, dest)
        if move:  # copy_rows raised each content's refcount; the removal lowers it back
            remove_messages(s, account_id, folder_id, [r.uid for r in rows])
    store.hub.changed([target.id, folder_id])
    return Copied(target.uidvalidity, [r.uid for r in rows], dest_uids, target.id)


def prepare_append(store: Store, account_id: int, folder: str, items: Sequence[ToAppend]) -> PreparedAppend:
    """APPEND's work before its write: parse each message, put its body in the blob store
    (durable before the commit names it; ``bodies.stage``)."""
    messages = tuple(NewMessage(account_id=account_id, raw=i.raw, analyzed=analyze(i.raw), folder=folder,
                                flags=i.flags, keywords=i.keywords, internaldate=_utc(i.internaldate)) for i in items)
    bodies.stage(store, messages)
    return PreparedAppend(messages)


def append_messages(store: Store, account_id: int, folder: str, items: Sequence[ToAppend] | PreparedAppend,
                    quota_default: int, claim_recent: bool = False) -> AppendedMany:
    """RFC 3501 6.3.11 for one message, RFC 3502 MULTIAPPEND for several: one transaction, so
    all are stored or none (a quota the whole set exceeds stores none); RFC 4315 APPENDUID
    after the commit. ``claim_recent``: the caller has this folder selected; claiming in the same
    transaction saves a second write. ``items`` may be prepared already (``prepare_append``,
    in another thread: on SQLite every writer of the process waits while one writes)."""
    if not isinstance(items, PreparedAppend):
        items = prepare_append(store, account_id, folder, items)
    messages = list(items.messages)
    if (store.dialect == "postgresql" and len(messages) == 1 and store.blobs is None and not store.external_mailboxes
            and not messages[0].reuse_content_id):
        from .pgappend import append_one_pg  # two pipelined round trips

        return append_one_pg(store, messages[0], quota_default, claim_recent)
    with writing(store) as s:
        target = folder_row(s, account_id, folder)
        check_quota(s, messages, quota_default)
        insert_messages(s, messages, {(account_id, folder): target.id},
                        {target.id: (target.uidnext, target.highestmodseq)})  # read above, under the lock
        recent = False
        if claim_recent:
            first, last = messages[0].uid, messages[-1].uid
            recent = bool(driver_rows(s, "UPDATE folder SET recent_uid = ? WHERE id = ? AND recent_uid = ? RETURNING id",
                                      last, target.id, first - 1))
    store.hub.changed([target.id])
    return AppendedMany(target.uidvalidity, [m.uid for m in messages], recent)


def _utc(internaldate: dt.datetime | None) -> dt.datetime | None:
    # stored in UTC: SQLite keeps no offset
    return None if internaldate is None else internaldate.astimezone(dt.timezone.utc)


def append_message(store: Store, account_id: int, folder: str, raw: bytes, flags: int, keywords: str | None,
                   internaldate: dt.datetime | None, quota_default: int, claim_recent: bool = False) -> Appended:
    """One message (``append_messages``)."""
    done = append_messages(store, account_id, folder, [ToAppend(raw, flags, keywords, internaldate)], quota_default,
                           claim_recent)
    return Appended(done.uidvalidity, done.uids[0], done.recent)


def quota_usage(store: Store, account_id: int, quota_default: int) -> QuotaUsage:
    """RFC 2087: bytes used and the byte limit of the account."""
    with raw_reader(store) as r:
        used, limit = quota_usage_of(r, [account_id]).get(account_id, (0, None))
    return QuotaUsage(used, int(limit or quota_default))

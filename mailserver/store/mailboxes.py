"""Mailbox operations over the store, as IMAP needs them (blocking: call through ``ctx.run``).

Folders are named in Unicode with "/" as the hierarchy separator; the IMAP edge encodes them
(modified UTF-7). Messages are read as Core rows, never ORM objects, and the statements every
client repeats (the folder row, SELECT's pass over the folder, FETCH FLAGS, STORE, EXPUNGE,
``changes_since``) as plain SQL through the driver's cursor (``driver_rows``), which costs a
fraction of SQLAlchemy's per-statement work: a 100,000-message folder opens in well under a
second. Every write bumps the folder's HIGHESTMODSEQ and the changed messages' MODSEQ, which is
how other sessions (in this process or another) learn what changed; it NOTIFYs other nodes on
PostgreSQL inside its transaction and calls ``store.hub.changed`` after the commit. On SQLite,
writes share commits (``groupcommit.py``).
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..config import AccountsConfig
from ..errors import Conflict, LimitExceeded, QuotaExceeded, SpecialUseRefused
from .api import (SEP, Appended, AppendedMany, CannotDelete, Changes, Copied, FolderInfo, FolderStatus,
                  HasChildFolders, Snapshot, Stored, ToAppend, UidRanges)
from .db import Store
from .driver import driver_execute, driver_rows, raw_reader, read_rows
from .mailbox_sql import (F, M, copy_rows, folder_row, info_of, INFO_SQL, release_content, remove_messages,
                          serialized_writes, writing)
from .models.mail import DELETED, SEEN
from .notify import announce, announce_account
# The selected folder's operations live in selection.py; they are re-exported here so that
# callers use one module for the mailbox store.
from .selection import (append_message, append_messages, prepare_append,
                        changes_since, claim_recent, copy_messages, expunge, fetch_rows, message_raw,
                        quota_usage, select_folder, claim_snapshot, store_flags, vanished_since)

# -- folders --------------------------------------------------------------------------------------
# The reads that every client repeats (LIST, STATUS, the folder row of each write) go through
# the driver's cursor: SQLAlchemy's per-statement work costs more than SQLite's here.

def list_folders(store: Store, account_id: int) -> list[FolderInfo]:
    return [info_of(t) for t in read_rows(store, f"SELECT {INFO_SQL} FROM folder WHERE account_id = ? ORDER BY name",
                                          account_id)]


#: INFO_SQL's columns of the folder table aliased f (folder_status)
_FOLDER_INFO = ", ".join(f"f.{c.strip()}" for c in INFO_SQL.split(","))


def folder_status(store: Store, account_id: int, names: Iterable[str] | None = None) -> list[FolderStatus]:
    """Counters of the named folders (all folders when names is None), with UNSEEN and RECENT."""
    params: list = [account_id]
    named = ""
    if names is not None:
        names = list(names)
        if not names:
            return []
        named = " AND {t}.name IN (" + ",".join("?" * len(names)) + ")"
        params += names
    # One statement (one round trip on PostgreSQL): the folders' rows, each with its counts
    # from one pass over its messages (on PostgreSQL in the account's leaf partition).
    sql = (f"SELECT {_FOLDER_INFO}, coalesce(a.unseen, 0), coalesce(a.recent, 0), coalesce(a.deleted, 0) "
           f"FROM folder f LEFT JOIN (SELECT m.folder_id AS folder_id, "
           f"sum(CASE WHEN m.flags & {SEEN} = 0 THEN 1 ELSE 0 END) AS unseen, "
           f"sum(CASE WHEN m.uid > g.recent_uid THEN 1 ELSE 0 END) AS recent, "
           f"sum(CASE WHEN m.flags & {DELETED} <> 0 THEN 1 ELSE 0 END) AS deleted "
           f"FROM {store.message_table(account_id)} m JOIN folder g ON g.account_id = m.account_id AND g.id = m.folder_id "
           f"WHERE m.account_id = ?{named.format(t='g')} "
           f"GROUP BY m.folder_id) a ON a.folder_id = f.id "
           f"WHERE f.account_id = ?{named.format(t='f')} ORDER BY f.name")
    rows = read_rows(store, sql, *params, *params)
    return [FolderStatus(info_of(r), *r[-3:]) for r in rows]  # the counts: unseen, recent, deleted


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


#: RFC 6154 uses a folder may be given (by CREATE ... USE): the real ones; \All and \Flagged
#: name virtual folders, which this store has not
CREATABLE_USES = {u.lower(): u for u in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")}


def special_use_of(uses: Iterable[str]) -> str | None:
    """The one special use a new folder gets (None for none); SpecialUseRefused for an unknown
    or virtual use, or more than one (a folder here has at most one)."""
    uses = list(uses)
    if not uses:
        return None
    if len(uses) > 1:
        raise SpecialUseRefused("a folder has one special use")
    use = CREATABLE_USES.get(uses[0].lower())
    if use is None:
        raise SpecialUseRefused(f"no folder can be {uses[0][:40]}")
    return use


def _insert_folder(session: Session, account_id: int, name: str, special_use: str | None = None) -> None:
    session.execute(F.insert().values(account_id=account_id, name=name, special_use=special_use,
                                      uidvalidity=_new_uidvalidity(session, account_id), uidnext=1,
                                      highestmodseq=1, total_size=0, message_count=0, recent_uid=0,
                                      uidvalidity_mark=0,
                                      created_at=dt.datetime.now(dt.timezone.utc)))


def _check_name(name: str, limits: AccountsConfig) -> None:
    if len(name) > limits.max_folder_name_length:
        raise LimitExceeded(f"folder names have at most {limits.max_folder_name_length} characters")
    if name.count(SEP) >= limits.max_folder_depth:
        raise LimitExceeded(f"folder names have at most {limits.max_folder_depth} levels")


def _account_names(session: Session, account_id: int) -> set[str]:
    """The account's folder names; on PostgreSQL its INBOX row is locked first, so that two
    concurrent CREATEs cannot both pass the folder count."""
    folder_row(session, account_id, "INBOX", lock=True)
    return set(session.scalars(select(F.c.name).where(F.c.account_id == account_id)))


def _check_count(names: set[str], adding: int, limits: AccountsConfig) -> None:
    if adding and len(names) + adding > limits.max_folders:
        raise LimitExceeded(f"an account has at most {limits.max_folders} folders")


def _missing_superiors(names: set[str], name: str) -> list[str]:
    parts = name.split(SEP)
    return [p for p in (SEP.join(parts[:i]) for i in range(1, len(parts))) if p not in names]


def create_folder(store: Store, account_id: int, name: str, limits: AccountsConfig = AccountsConfig(),
                  uses: Iterable[str] = ()) -> FolderInfo:
    """RFC 3501 6.3.3; superior names are created too. ``uses``: RFC 6154 5.2 special uses
    for the new folder (``special_use_of``). Conflict if it exists; LimitExceeded if the name
    is too long or too deep, or the account would have too many folders. The new folder's row."""
    special_use = special_use_of(uses)
    name = name.rstrip(SEP)
    if not name or name.upper() == "INBOX" or any(not part for part in name.split(SEP)):
        raise Conflict(f"cannot create {name}")
    _check_name(name, limits)
    with writing(store) as s:
        existing = _account_names(s, account_id)
        if name in existing:
            raise Conflict(f"{name} exists")
        new = _missing_superiors(existing, name) + [name]
        _check_count(existing, len(new), limits)
        for path in new:
            _insert_folder(s, account_id, path, special_use if path == name else None)
        made = folder_row(s, account_id, name)
        announce_account(s, account_id)
    store.hub.account_changed([account_id])
    return made


def delete_folder(store: Store, account_id: int, name: str) -> None:
    """RFC 3501 6.3.4. INBOX, folders with children and the last folder of each special use
    stay (one made with CREATE ... USE beside the account's own may go)."""
    if name.upper() == "INBOX":
        raise CannotDelete("INBOX cannot be deleted")
    with writing(store) as s:
        row = folder_row(s, account_id, name)
        if row.special_use and s.scalar(select(func.count()).where(F.c.account_id == account_id,
                                                                  F.c.special_use == row.special_use)) < 2:
            raise CannotDelete(f"{name} is the account's {row.special_use} folder")
        if s.scalar(select(func.count()).where(F.c.account_id == account_id, F.c.name.startswith(name + SEP,
                                                                                                   autoescape=True))):
            raise HasChildFolders(f"{name} has child folders")
        mine = (M.c.account_id == account_id) & (M.c.folder_id == row.id)
        content_ids = list(s.scalars(select(M.c.content_id).where(mine)))
        s.execute(delete(M).where(mine))
        # The folder goes, and its tombstones with it: a folder made later under the same
        # name has another UIDVALIDITY, so no client resynchronises against these. Its METADATA
        # entries go too (RFC 5464 3.1): the new folder starts with none.
        driver_execute(s, "DELETE FROM expunged WHERE folder_id = ?", [(row.id,)])
        driver_execute(s, "DELETE FROM annotation WHERE folder_id = ?", [(row.id,)])
        release_content(s, content_ids)
        s.execute(delete(F).where(F.c.id == row.id))
        announce(s, [row.id])
        announce_account(s, account_id)
    store.hub.changed([row.id])
    store.hub.account_changed([account_id])


def rename_folder(store: Store, account_id: int, old: str, new: str, limits: AccountsConfig = AccountsConfig()) -> None:
    """RFC 3501 6.3.5: children move along; renaming INBOX moves its messages to a new folder
    and leaves INBOX empty. LimitExceeded as for create_folder, for the children's new names too."""
    new = new.rstrip(SEP)
    if not new or new.upper() == "INBOX" or any(not p for p in new.split(SEP)):
        raise Conflict(f"cannot rename to {new}")
    _check_name(new, limits)
    moved_folders: list[int] = []
    with writing(store) as s:
        names = _account_names(s, account_id)
        if new in names:
            raise Conflict(f"{new} exists")
        is_inbox = old.upper() == "INBOX"
        row = folder_row(s, account_id, "INBOX" if is_inbox else old, lock=True)
        if new.startswith(row.name + SEP):
            raise Conflict("cannot rename a folder into itself")
        if not is_inbox:
            for child in names:
                if child.startswith(old + SEP):
                    _check_name(new + child[len(old):], limits)
        superiors = _missing_superiors(names, new)
        _check_count(names, len(superiors) + (1 if is_inbox else 0), limits)
        for path in superiors:
            _insert_folder(s, account_id, path)
        if is_inbox:
            _insert_folder(s, account_id, new)
            target = folder_row(s, account_id, new)
            uids = list(s.execute(select(M.c.uid, M.c.content_id, M.c.size, M.c.flags, M.c.keywords, M.c.internaldate)
                                  .where(M.c.account_id == account_id, M.c.folder_id == row.id).order_by(M.c.uid)))
            copy_rows(s, account_id, uids, new)
            remove_messages(s, account_id, row.id, [u.uid for u in uids])  # refcounts: +1 by the copy, -1 here
            moved_folders = [row.id, target.id]
        else:
            _rename_subscriptions(s, account_id, old, new)
            s.execute(update(F).where(F.c.id == row.id).values(name=new))
            children = s.execute(select(F.c.id, F.c.name).where(F.c.account_id == account_id,
                                                                F.c.name.startswith(old + SEP, autoescape=True))).all()
            for cid, cname in children:
                s.execute(update(F).where(F.c.id == cid).values(name=new + cname[len(old):]))
            moved_folders = [row.id] + [c[0] for c in children]
        announce(s, moved_folders)
        announce_account(s, account_id)
    store.hub.changed(moved_folders)
    store.hub.account_changed([account_id])


# -- subscriptions (RFC 3501 6.3.6, 6.3.7): a list of names of its own ----------------------------------
# CREATE does not subscribe and DELETE does not unsubscribe; a name may be subscribed with no
# folder behind it. RENAME moves the subscriptions of the folder and its children along.

def subscriptions(store: Store, account_id: int) -> list[str]:
    """The account's subscribed names, sorted."""
    with raw_reader(store) as s:
        return [r[0] for r in driver_rows(s, "SELECT name FROM mailbox_subscription WHERE account_id = ? ORDER BY name",
                                          account_id)]


def subscribe(store: Store, account_id: int, name: str, limits: AccountsConfig = AccountsConfig()) -> None:
    """SUBSCRIBE: idempotent, whether or not a folder has the name. LimitExceeded past
    accounts.max_subscriptions names, or for a name longer or deeper than a folder's may be."""
    name = name.rstrip(SEP)
    if not name or any(not part for part in name.split(SEP)):
        raise Conflict(f"cannot subscribe {name}")
    _check_name(name, limits)
    with writing(store) as s:
        folder_row(s, account_id, "INBOX", lock=True)  # PostgreSQL: one writer of the list at a time
        count, have = driver_rows(s, "SELECT count(*), coalesce(sum(CASE WHEN name = ? THEN 1 ELSE 0 END), 0) "
                                     "FROM mailbox_subscription WHERE account_id = ?", name, account_id)[0]
        if have:
            return
        if count >= limits.max_subscriptions:
            raise LimitExceeded(f"an account has at most {limits.max_subscriptions} subscriptions")
        driver_execute(s, "INSERT INTO mailbox_subscription (account_id, name) VALUES (?, ?)", [(account_id, name)])
        announce_account(s, account_id)
    store.hub.account_changed([account_id])


def unsubscribe(store: Store, account_id: int, name: str) -> None:
    """UNSUBSCRIBE: idempotent (a name not on the list is not an error)."""
    with writing(store) as s:
        driver_execute(s, "DELETE FROM mailbox_subscription WHERE account_id = ? AND name = ?",
                       [(account_id, name.rstrip(SEP))])
        announce_account(s, account_id)
    store.hub.account_changed([account_id])


def _rename_subscriptions(session: Session, account_id: int, old: str, new: str) -> None:
    """RENAME: the folder's subscription and its children's go to the new names (the new names'
    own subscriptions, if any, stay)."""
    for (name,) in driver_rows(session, "SELECT name FROM mailbox_subscription WHERE account_id = ? AND "
                                        "(name = ? OR substr(name, 1, ?) = ?)", account_id, old, len(old) + 1,
                               old + SEP):
        moved = new + name[len(old):]
        driver_execute(session, "DELETE FROM mailbox_subscription WHERE account_id = ? AND name = ?",
                       [(account_id, name)])
        if not driver_rows(session, "SELECT 1 FROM mailbox_subscription WHERE account_id = ? AND name = ?",
                           account_id, moved):
            driver_execute(session, "INSERT INTO mailbox_subscription (account_id, name) VALUES (?, ?)",
                           [(account_id, moved)])


def find_folder(store: Store, account_id: int, name: str) -> FolderInfo:
    with raw_reader(store) as s:
        return folder_row(s, account_id, name)



__all__ = ["FolderInfo", "FolderStatus", "Snapshot", "Changes", "Copied", "Stored", "Appended", "AppendedMany", "ToAppend", "append_messages", "prepare_append", "CannotDelete",
           "QuotaExceeded", "SEP", "UidRanges", "writing", "serialized_writes",
           "list_folders", "folder_status", "create_folder", "delete_folder", "rename_folder", "subscriptions",
           "subscribe", "unsubscribe",
           "find_folder", "select_folder", "claim_snapshot", "claim_recent", "changes_since", "fetch_rows", "message_raw", "store_flags",
           "expunge", "copy_messages", "append_message", "quota_usage"]

"""``api.MailStore`` over the SQL schema (SQLite or PostgreSQL): the one implementation today.

It adds no SQL of its own: the statements live in ``mailstore.py`` (writing messages, quota),
``mailboxes.py`` (folders), ``selection.py`` (a selected folder) and ``sortrows.py``, which take
the database ``Store`` this object wraps. It holds no state of its own either: the change hub
and the group commit belong to that ``Store`` (``db.hub``, ``db.commits``), so that every writer
over one database, through this object or not, tells the same sessions.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..config import AccountsConfig
from ..mime import Analyzed
from . import mailboxes, mailstore, sortrows
from .api import (AppendedMany, Changes, Copied, Delivered, FolderInfo, FolderStatus, NewMessage, QuotaUsage,
                  PreparedAppend, Snapshot, Stored, ToAppend, UidRanges)
from .db import Store
from .mailbox_sql import touch_messages
from .notify import ChangeHub

#: rows read per query by ``search`` (as many as one FETCH batch of the IMAP edge)
SEARCH_BATCH = 10000


class SqlMailStore:
    """The mail store over one database (``Store.mail``). See ``api.MailStore`` for each method."""

    def __init__(self, db: Store) -> None:
        self.db = db

    @property
    def hub(self) -> ChangeHub:
        return self.db.hub

    # -- delivering ------------------------------------------------------------------------------
    def deliver(self, raw: bytes, account_ids: Sequence[int], folder: str = "INBOX",
                quota_default: int | None = None, analyzed: Analyzed | None = None) -> list[Delivered]:
        return mailstore.deliver(self.db, raw, list(account_ids), folder, quota_default, analyzed)

    def deliver_in(self, txn, messages: Sequence[NewMessage]) -> list[Delivered]:
        return mailstore.insert_messages(txn, list(messages))

    def changed(self, folder_ids: Iterable[int]) -> None:
        self.db.hub.changed(folder_ids)

    def over_quota(self, txn, items: Sequence[tuple[int, Sequence[int]]], quota_default: int) -> set[int]:
        return mailstore.over_quota(txn, items, quota_default)

    def check_quota(self, txn, messages: Sequence[NewMessage], quota_default: int) -> None:
        mailstore.check_quota(txn, messages, quota_default)

    def quota(self, account_id: int, quota_default: int) -> QuotaUsage:
        return mailboxes.quota_usage(self.db, account_id, quota_default)

    def raw_in(self, txn, account_id: int, message_id: int) -> bytes | None:
        return mailstore.read_raw(self.db, txn, account_id, [message_id]).get(message_id)

    def touch_in(self, txn, messages: Sequence[tuple[int, int]]) -> list[int]:
        return touch_messages(txn, list(messages))

    # -- folders ---------------------------------------------------------------------------------
    def list_folders(self, account_id: int) -> list[FolderInfo]:
        return mailboxes.list_folders(self.db, account_id)

    def folder_status(self, account_id: int, names: Iterable[str] | None = None) -> list[FolderStatus]:
        return mailboxes.folder_status(self.db, account_id, names)

    def find_folder(self, account_id: int, name: str) -> FolderInfo:
        return mailboxes.find_folder(self.db, account_id, name)

    def create_folder(self, account_id: int, name: str, limits: AccountsConfig = AccountsConfig(),
                      uses: Iterable[str] = ()) -> FolderInfo:
        return mailboxes.create_folder(self.db, account_id, name, limits, uses)

    def delete_folder(self, account_id: int, name: str) -> None:
        mailboxes.delete_folder(self.db, account_id, name)

    def rename_folder(self, account_id: int, old: str, new: str, limits: AccountsConfig = AccountsConfig()) -> None:
        mailboxes.rename_folder(self.db, account_id, old, new, limits)

    def subscriptions(self, account_id: int) -> list[str]:
        return mailboxes.subscriptions(self.db, account_id)

    def subscribe(self, account_id: int, name: str, limits: AccountsConfig = AccountsConfig()) -> None:
        mailboxes.subscribe(self.db, account_id, name, limits)

    def unsubscribe(self, account_id: int, name: str) -> None:
        mailboxes.unsubscribe(self.db, account_id, name)

    # -- a selected folder -----------------------------------------------------------------------
    def select(self, account_id: int, name: str, readonly: bool, claim: bool = True) -> Snapshot:
        return mailboxes.select_folder(self.db, account_id, name, readonly, claim)

    def claim_snapshot(self, snap: Snapshot) -> Snapshot:
        return mailboxes.claim_snapshot(self.db, snap)

    def claim_recent(self, folder_id: int, up_to_uid: int) -> int:
        return mailboxes.claim_recent(self.db, folder_id, up_to_uid)

    def changes_since(self, account_id: int, folder_id: int, modseq: int, known_max_uid: int, known_count: int,
                      force: bool = False) -> Changes | None:
        return mailboxes.changes_since(self.db, account_id, folder_id, modseq, known_max_uid, known_count, force)

    def vanished_since(self, account_id: int, folder_id: int, modseq: int, ranges: UidRanges | None,
                       still_seen: Sequence[int] = ()) -> list[tuple[int, int]]:
        return mailboxes.vanished_since(self.db, account_id, folder_id, modseq, ranges, still_seen)

    def fetch(self, account_id: int, folder_id: int, lo_uid: int, hi_uid: int, limit: int, fields: Sequence[str],
              uids: UidRanges | None = None, changedsince: int | None = None,
              within: tuple[int, int] | None = None) -> list | None:
        return mailboxes.fetch_rows(self.db, account_id, folder_id, lo_uid, hi_uid, limit, fields, uids, changedsince, within)

    def search(self, account_id: int, folder_id: int, lo_uid: int, hi_uid: int, fields: Sequence[str],
               match: Callable[[Any], bool], uids: UidRanges | None = None) -> Iterator:
        fields = tuple(fields)
        while lo_uid <= hi_uid:
            rows = mailboxes.fetch_rows(self.db, account_id, folder_id, lo_uid, hi_uid, SEARCH_BATCH, fields, uids)
            yield from (row for row in rows if match(row))
            if len(rows) < SEARCH_BATCH:
                return
            lo_uid = rows[-1].uid + 1

    def sort_values(self, account_id: int, folder_id: int, names: Sequence[str], after_uid: int, hi_uid: int,
                    limit: int) -> list[tuple]:
        return sortrows.sort_rows(self.db, account_id, folder_id, names, after_uid, hi_uid, limit)

    def message_raw(self, account_id: int, folder_id: int, uid: int) -> bytes:
        return mailboxes.message_raw(self.db, account_id, folder_id, uid)

    def store_flags(self, account_id: int, folder_id: int, uids: UidRanges, mode: str, bits: int, keywords: Sequence[str],
                    unchangedsince: int | None = None) -> Stored:
        return mailboxes.store_flags(self.db, account_id, folder_id, uids, mode, bits, keywords, unchangedsince)

    def expunge(self, account_id: int, folder_id: int, uids: UidRanges | None = None) -> list[int]:
        return mailboxes.expunge(self.db, account_id, folder_id, uids)

    def copy(self, account_id: int, folder_id: int, uids: UidRanges, dest: str, move: bool,
             quota_default: int) -> Copied:
        return mailboxes.copy_messages(self.db, account_id, folder_id, uids, dest, move, quota_default)

    def prepare_append(self, account_id: int, folder: str, items: Sequence[ToAppend]) -> PreparedAppend:
        return mailboxes.prepare_append(self.db, account_id, folder, items)

    def append(self, account_id: int, folder: str, items: Sequence[ToAppend] | PreparedAppend, quota_default: int,
               claim_recent: bool = False) -> AppendedMany:
        return mailboxes.append_messages(self.db, account_id, folder, items, quota_default, claim_recent)

    # -- how writes share commits ----------------------------------------------------------------
    @property
    def batches_writes(self) -> bool:
        return self.db.dialect == "sqlite"

    @contextlib.contextmanager
    def batch(self, durable: bool = True) -> Iterator[None]:
        with self.db.hub.held(), self.db.commits.batch(durable):
            yield

"""store/mailboxes.py on both engines (SQLite and PostgreSQL): what the IMAP handlers rely on."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from mailserver.errors import Conflict, NotFound, QuotaExceeded
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from mailserver.store import mailboxes as mb
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, Content
from mailserver.store.models.mail import DELETED, FLAGGED, SEEN


@pytest.fixture
def account(registry, store):
    made = add_citizen(registry, "李娜", idnumber.make("330106", dt.date(1990, 5, 6), 7), password="long enough pw")
    with store.reader() as s:
        return s.scalar(select(Account.id).where(Account.address == made.address))


def test_folders_create_rename_delete(store, account):
    mb.create_folder(store, account, "项目/2026")
    with pytest.raises(Conflict):
        mb.create_folder(store, account, "项目")
    mb.rename_folder(store, account, "项目", "Work")
    names = {f.name for f in mb.list_folders(store, account)}
    assert {"Work", "Work/2026"} <= names and "项目" not in names
    with pytest.raises(mb.CannotDelete):
        mb.delete_folder(store, account, "Work")
    mb.delete_folder(store, account, "Work/2026")
    with pytest.raises(NotFound):
        mb.delete_folder(store, account, "Work/2026")
    before = mb.find_folder(store, account, "Work").uidvalidity
    mb.delete_folder(store, account, "Work")
    mb.create_folder(store, account, "Work")
    assert mb.find_folder(store, account, "Work").uidvalidity > before  # a recreated name never reuses it


def test_append_flags_copy_move_expunge_and_changes(store, account):
    inbox = mb.find_folder(store, account, "INBOX")
    done = mb.append_message(store, account, "INBOX", b"Subject: a\r\n\r\nx\r\n", 0, None, None, 10**9)
    assert (done.uidvalidity, done.uid, done.recent) == (inbox.uidvalidity, 1, False)
    deliver(store, b"Subject: b\r\n\r\ny\r\n", [account])
    snap = mb.select_folder(store, account, "INBOX", readonly=False)
    assert list(snap.uids) == [1, 2] and snap.recent == 2 and snap.first_unseen_uid == 1
    assert mb.select_folder(store, account, "INBOX", readonly=False).recent == 0  # claimed once
    stored = mb.store_flags(store, account, inbox.id, [(1, 2)], "+", SEEN | FLAGGED, ["$Notice"])
    assert [(u, f) for u, f, _, _ in stored.rows] == [(1, SEEN | FLAGGED), (2, SEEN | FLAGGED)]
    changes = mb.changes_since(store, account, inbox.id, snap.folder.highestmodseq, 2, 2)
    assert [c[0] for c in changes.changed] == [1, 2] and changes.present is None
    copied = mb.copy_messages(store, account, inbox.id, [(1, 1)], "Archive", move=False, quota_default=10**9)
    assert copied.dest_uids == [1]
    moved = mb.copy_messages(store, account, inbox.id, [(2, 2)], "Trash", move=True, quota_default=10**9)
    assert moved.source_uids == [2] and moved.dest_uids == [1]
    changes = mb.changes_since(store, account, inbox.id, changes.highestmodseq, 2, 2)
    assert list(changes.present) == [1]  # message 2 went (moved)
    mb.store_flags(store, account, inbox.id, [(1, 1)], "", DELETED, [])
    assert mb.expunge(store, account, inbox.id) == [1]
    statuses = {s.info.name: s for s in mb.folder_status(store, account)}
    assert statuses["INBOX"].info.message_count == 0
    assert statuses["Archive"].info.message_count == 1 and statuses["Trash"].info.message_count == 1
    with store.reader() as s:  # content shared by the copy is still there; nothing orphaned
        assert s.scalar(select(func.count()).select_from(Content)) == 2


def test_quota_counts_appends_and_copies(store, account):
    mb.append_message(store, account, "INBOX", b"x" * 600, 0, None, None, 1000)
    with pytest.raises(QuotaExceeded):
        mb.append_message(store, account, "INBOX", b"y" * 600, 0, None, None, 1000)
    inbox = mb.find_folder(store, account, "INBOX")
    with pytest.raises(QuotaExceeded):
        mb.copy_messages(store, account, inbox.id, [(1, 1)], "Archive", move=False, quota_default=1000)
    assert mb.quota_usage(store, account, 1000) == (600, 1000)


def test_concurrent_writers_share_commits_and_lose_nothing(store, account):
    """Eight threads appending and flagging at once (group commit on SQLite, row locks on PG)."""
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                mb.append_message(store, account, "INBOX", f"Subject: {n}-{i}\r\n\r\n".encode(), 0, None, None, 10**9)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    snap = mb.select_folder(store, account, "INBOX", readonly=True)
    assert list(snap.uids) == list(range(1, 81)) and snap.folder.uidnext == 81


def test_modseqs_unchangedsince_and_a_store_that_changes_nothing(store, account):
    """RFC 7162 in the store, on both engines (PostgreSQL takes the MODSEQ first and gives it back)."""
    for i in range(3):
        deliver(store, f"Subject: {i}\r\n\r\nx\r\n".encode(), [account])
    inbox = mb.find_folder(store, account, "INBOX")
    start = inbox.highestmodseq
    stored = mb.store_flags(store, account, inbox.id, [(2, 2)], "+", FLAGGED, [])
    assert stored.rows == [(2, FLAGGED, None, start + 1)] and (stored.modseq_before, stored.modseq_after) == (start,
                                                                                                             start + 1)
    # UID 2 changed after `start`: refused; 1 and 3 change and get the next MODSEQ
    stored = mb.store_flags(store, account, inbox.id, [(1, 3)], "+", SEEN, ["$x"], unchangedsince=start)
    assert stored.modified == [2]
    assert stored.rows == [(1, SEEN, "$x", start + 2), (3, SEEN, "$x", start + 2)]
    # nothing to change: no MODSEQ moves, HIGHESTMODSEQ included; the rows keep theirs
    stored = mb.store_flags(store, account, inbox.id, [(1, 1), (3, 3)], "+", SEEN, [])
    assert stored.modified == [] and (stored.modseq_before, stored.modseq_after) == (0, 0)
    assert stored.rows == [(1, SEEN, "$x", start + 2), (3, SEEN, "$x", start + 2)]
    assert mb.find_folder(store, account, "INBOX").highestmodseq == start + 2
    assert mb.store_flags(store, account, inbox.id, [(1, 3)], "-", SEEN, [], unchangedsince=0).modified == [1, 2, 3]
    assert mb.find_folder(store, account, "INBOX").highestmodseq == start + 2
    # CHANGEDSINCE and the MODSEQs other sessions are told
    rows = mb.fetch_rows(store, account, inbox.id, 1, 3, 100, ("flags", "modseq"), changedsince=start + 1)
    assert [(r.uid, r.modseq) for r in rows] == [(1, start + 2), (3, start + 2)]
    changes = mb.changes_since(store, account, inbox.id, start, 3, 3)
    assert changes.changed == [(1, SEEN, "$x", start + 2), (2, FLAGGED, None, start + 1), (3, SEEN, "$x", start + 2)]

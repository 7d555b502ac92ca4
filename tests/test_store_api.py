"""The mail-store interface (store/api.py), held against each implementation on both engines.

Every test here speaks only ``MailStore``: a second implementation (bodies in a blob store, an
external store) is added to IMPLEMENTATIONS and must pass the same tests. Account set-up and the
caller's transaction come from the fixtures, since those belong to the database the store sits on.
"""
from __future__ import annotations

import datetime as dt
import inspect
import threading

import pytest
from sqlalchemy import select

from mailserver.config import AccountsConfig
from mailserver.errors import Conflict, NotFound, QuotaExceeded
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from mailserver.store import api
from mailserver.store.api import DELETED, FLAGGED, SEEN, MailStore, NewMessage, QuotaUsage, ToAppend
from mailserver.store.models import Account

#: name -> the mail store of an implementation over a database ``Store``
IMPLEMENTATIONS = {
    "sql": lambda store: store.mail,
}
LIMITS = AccountsConfig()
BIG = 10**9


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def mail(request, store) -> MailStore:
    return IMPLEMENTATIONS[request.param](store)


@pytest.fixture
def txn(store):
    """The caller's transaction for ``deliver_in`` and friends (committed on leaving)."""
    return store.session


def _account(registry, store, n: int) -> int:
    made = add_citizen(registry, "李娜", idnumber.make("330106", dt.date(1990, 5, n), n), password="long enough pw")
    with store.reader() as s:
        return s.scalar(select(Account.id).where(Account.address == made.address))


@pytest.fixture
def account(registry, store) -> int:
    return _account(registry, store, 6)


def _msg(subject: str, body: str = "x") -> bytes:
    return f"From: a@x.example\r\nTo: b@y.example\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def test_the_sql_store_has_every_method_of_the_protocol_with_its_parameters(mail):
    """Deeper than ``isinstance`` on a runtime_checkable Protocol (names only): each method's
    parameters, in order, with the same defaults."""
    assert isinstance(mail, MailStore)
    for name, member in vars(MailStore).items():
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        implemented = inspect.getattr_static(type(mail), name, None)
        assert implemented is not None, f"{type(mail).__name__} lacks {name}"
        if isinstance(member, property):
            assert isinstance(implemented, property), name
            continue
        want = [(p.name, p.default) for p in inspect.signature(member).parameters.values()]
        have = [(p.name, p.default) for p in inspect.signature(implemented).parameters.values()]
        assert [w[0] for w in want] == [h[0] for h in have][:len(want)], name
        for (pname, default), (_, got) in zip(want, have):
            if default is not inspect.Parameter.empty:
                assert got == default, f"{name}({pname}=...)"
    assert "hub" in MailStore.__annotations__ and mail.hub is not None


def test_deliver_select_fetch_and_the_raw_bytes(mail, account):
    delivered = mail.deliver(_msg("一", "第一封"), [account])
    assert [(d.account_id, d.uid) for d in delivered] == [(account, 1)]
    mail.deliver(_msg("two"), [account], folder="Archive")
    snap = mail.select(account, "INBOX", readonly=False)
    assert list(snap.uids) == [1] and snap.recent == 1 and snap.first_unseen_uid == 1
    assert snap.folder.id == delivered[0].folder_id
    rows = mail.fetch(account, snap.folder.id, 1, 10, 100, ("flags", "size", "envelope", "raw", "header"))
    assert [r.uid for r in rows] == [1]
    assert bytes(rows[0].raw) == _msg("一", "第一封") and rows[0].size == len(_msg("一", "第一封"))
    assert bytes(rows[0].header).endswith(b"\r\n\r\n") and bytes(rows[0].header) in _msg("一", "第一封")
    assert rows[0].envelope and rows[0].flags == 0
    assert mail.message_raw(account, snap.folder.id, 1) == _msg("一", "第一封")
    assert mail.message_raw(account, snap.folder.id, 2) == b""
    with pytest.raises(NotFound):
        mail.deliver(_msg("x"), [account], folder="No such folder")
    with pytest.raises(NotFound):
        mail.select(account, "No such folder", readonly=True)


def test_deliver_in_the_callers_transaction_commits_with_it_or_not_at_all(mail, txn, account):
    heard: list[int] = []
    inbox = mail.find_folder(account, "INBOX")
    mail.hub.subscribe(inbox.id, heard.append)
    try:
        with pytest.raises(RuntimeError):
            with txn() as t:
                mail.deliver_in(t, [NewMessage(account_id=account, raw=_msg("rolled back"))])
                raise RuntimeError("the caller's own rows failed")
        assert mail.find_folder(account, "INBOX").message_count == 0
        with txn() as t:
            done = mail.deliver_in(t, [NewMessage(account_id=account, raw=_msg("a")),
                                       NewMessage(account_id=account, raw=_msg("b"), folder="Sent", flags=SEEN)])
            assert heard == []  # not before the commit
        mail.changed(d.folder_id for d in done)
        assert heard == [inbox.id]
        # the UIDs a rolled-back transaction allocated are not used again, nor skipped
        assert [d.uid for d in done] == [1, 1]
        with txn() as t:
            raw = mail.raw_in(t, account, done[0].message_id)
        assert raw == _msg("a")
    finally:
        mail.hub.unsubscribe(inbox.id, heard.append)


def test_store_flags_changes_since_search_and_expunge(mail, account):
    for i in range(4):
        mail.deliver(_msg(f"m{i}", "needle" if i % 2 else "hay"), [account])
    snap = mail.select(account, "INBOX", readonly=False)
    fid, start = snap.folder.id, snap.folder.highestmodseq
    stored = mail.store_flags(account, fid, [(1, 2)], "+", SEEN | FLAGGED, ["$Notice"])
    assert [(u, f, k) for u, f, k, _ in stored.rows] == [(1, SEEN | FLAGGED, "$Notice"), (2, SEEN | FLAGGED, "$Notice")]
    assert (stored.modseq_before, stored.modseq_after) == (start, start + 1)
    refused = mail.store_flags(account, fid, [(1, 3)], "-", SEEN, [], unchangedsince=start)
    assert refused.modified == [1, 2]
    changes = mail.changes_since(account, fid, start, 4, 4)
    # 1 and 2 changed; 3 had no \Seen to remove, so it kept its MODSEQ
    assert [c[0] for c in changes.changed] == [1, 2] and changes.new == [] and changes.present is None
    found = [r.uid for r in mail.search(account, fid, 1, 4, ("search_text", "flags"),
                                        lambda r: "needle" in (r.search_text or "") and not r.flags & SEEN)]
    assert found == [4]  # 2 has the needle, but is \Seen
    mail.store_flags(account, fid, [(2, 3)], "+", DELETED, [])
    assert mail.expunge(account, fid, [(3, 4)]) == [3]  # UID EXPUNGE: within the range only
    changes = mail.changes_since(account, fid, start, 4, 4)
    assert list(changes.present) == [1, 2, 4]
    assert mail.vanished_since(account, fid, start, None) == [(3, 3)]
    assert mail.expunge(account, fid) == [2]
    assert [s.info.message_count for s in mail.folder_status(account, ["INBOX"])] == [2]
    assert mail.changes_since(account, fid + 10**6, 0, 0, 0) is None  # the folder is gone


def test_append_copy_move_and_quota_counted_one_way(mail, txn, account, registry, store):
    done = mail.append(account, "INBOX", [ToAppend(b"x" * 600, SEEN, "$a", None), ToAppend(b"y" * 100, 0, None, None)],
                       1000)
    assert done.uids == [1, 2]
    assert mail.quota(account, 1000) == QuotaUsage(700, 1000)
    with pytest.raises(QuotaExceeded):  # all or nothing
        mail.append(account, "INBOX", [ToAppend(b"z" * 100, 0, None, None), ToAppend(b"z" * 300, 0, None, None)],
                    1000)
    inbox = mail.find_folder(account, "INBOX")
    assert inbox.message_count == 2
    with pytest.raises(QuotaExceeded):
        mail.copy(account, inbox.id, [(1, 1)], "Archive", move=False, quota_default=1000)
    moved = mail.copy(account, inbox.id, [(1, 1)], "Archive", move=True, quota_default=1000)  # a move adds nothing
    assert moved.source_uids == [1] and moved.dest_uids == [1]
    assert mail.quota(account, 1000) == QuotaUsage(700, 1000)
    other = _account(registry, store, 7)
    # the same figures for the writers that check in their own transaction
    with txn() as t:
        assert mail.over_quota(t, [(200, [account]), (200, [other]), (200, [account, other]), (100, [account])],
                               1000) == {2}  # 700 + 200 + 200 for the first account; the last fits again
        mail.check_quota(t, [NewMessage(account_id=account, raw=b"q" * 300)], 1000)
        with pytest.raises(QuotaExceeded):
            mail.check_quota(t, [NewMessage(account_id=account, raw=b"q" * 200)] * 2, 1000)
    with pytest.raises(QuotaExceeded):
        mail.deliver(b"w" * 400, [account, other], quota_default=1000)
    assert mail.quota(other, 1000).used == 0  # nobody got it


def test_folders_and_subscriptions(mail, account):
    made = mail.create_folder(account, "项目/2026", LIMITS)
    assert made.name == "项目/2026" and made.uidnext == 1
    with pytest.raises(Conflict):
        mail.create_folder(account, "项目", LIMITS)
    mail.subscribe(account, "项目/2026", LIMITS)
    mail.rename_folder(account, "项目", "Work", LIMITS)
    names = {f.name for f in mail.list_folders(account)}
    assert {"Work", "Work/2026"} <= names and "项目" not in names
    assert "Work/2026" in mail.subscriptions(account)
    with pytest.raises(api.HasChildFolders):
        mail.delete_folder(account, "Work")
    mail.delete_folder(account, "Work/2026")
    mail.unsubscribe(account, "Work/2026")
    assert "Work/2026" not in mail.subscriptions(account)
    with pytest.raises(NotFound):
        mail.find_folder(account, "Work/2026")


def test_sort_values_and_recent_claims(mail, account):
    for subject in ("b", "a", "c"):
        mail.deliver(_msg(subject), [account])
    snap = mail.select(account, "INBOX", readonly=True)
    assert snap.unclaimed and snap.recent == 3  # EXAMINE counts them, claims none
    rows = mail.sort_values(account, snap.folder.id, ("subject", "size"), 0, 3, 10)
    assert [uid for uid, _, _ in rows] == [1, 2, 3]  # in UID order, the values to sort by beside
    assert [uid for uid, _, _ in sorted(rows, key=lambda r: r[1])] == [2, 1, 3]
    assert {size for _, _, size in rows} == {len(_msg("a"))}
    assert mail.claim_recent(snap.folder.id, 2) == 0
    claimed = mail.claim_snapshot(snap)
    assert claimed.recent == 1 and claimed.recent_above == 2


def test_writes_in_a_batch_are_told_after_its_commit(mail, account):
    heard: list[int] = []
    inbox = mail.find_folder(account, "INBOX")
    mail.hub.subscribe(inbox.id, heard.append)
    try:
        if mail.batches_writes:
            told_inside = []
            with mail.batch():
                mail.append(account, "INBOX", [ToAppend(_msg("one"), 0, None, None)], BIG)
                mail.store_flags(account, inbox.id, [(1, 1)], "+", SEEN, [])
                told_inside.extend(heard)
            assert told_inside == [] and heard == [inbox.id]
        else:
            mail.append(account, "INBOX", [ToAppend(_msg("one"), 0, None, None)], BIG)
            assert heard == [inbox.id]
    finally:
        mail.hub.unsubscribe(inbox.id, heard.append)


def test_concurrent_deliveries_lose_nothing(mail, account):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(8):
                mail.deliver(_msg(f"{n}-{i}"), [account])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    snap = mail.select(account, "INBOX", readonly=True)
    assert list(snap.uids) == list(range(1, 49))


def test_each_store_has_its_own_hub_and_group_commit(config, store):
    """State belongs to the store it serves: no module-level hub or group-commit registry."""
    from mailserver.registry import Registry
    from mailserver.server import ServerContext
    from mailserver.store import open_store

    other = open_store(config)
    try:
        assert other.hub is not store.hub and other.commits is not store.commits
        assert store.mail.hub is store.hub and store.mail is store.mail
        ctx = ServerContext(config, store, Registry(config, store))
        assert ctx.hub is store.hub and ctx.mail is store.mail
        ctx.shutdown()
    finally:
        other.dispose()


def test_an_expunge_on_sqlite_reads_the_rows_it_removes_once(store, account):
    """EXPUNGE's one SELECT of the \\Deleted messages gives remove_messages their content ids and
    sizes too; the counters and the content's refcounts come out right."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's own expunge (PostgreSQL's is pgexpunge)")
    from sqlalchemy import event

    mail = store.mail
    for i in range(3):
        mail.deliver(_msg(f"m{i}", f"body {i}"), [account])
    fid = mail.select(account, "INBOX", readonly=False).folder.id
    mail.store_flags(account, fid, [(1, 2)], "+", DELETED, [])
    sent: list[str] = []
    store.commits.close()
    store.engine.pool.dispose()  # connections made from here on are traced
    event.listen(store.engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(sent.append))
    assert mail.expunge(account, fid) == [1, 2]
    reads = [s for s in sent if s.startswith("SELECT") and " FROM message " in s]
    assert len(reads) == 1 and reads[0].startswith("SELECT uid, content_id, size FROM message"), sent
    [status] = mail.folder_status(account, ["INBOX"])
    assert (status.info.message_count, status.info.total_size) == (1, len(_msg("m2", "body 2")))


def test_an_append_on_sqlite_reads_its_folders_counters_once(store, account):
    """APPEND reads the folder's row (UIDNEXT, HIGHESTMODSEQ) once, under the write lock, and the
    UIDs and counters it writes follow from it; two APPENDs in one group commit's batch each see
    the other's."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's counters are read under BEGIN IMMEDIATE's lock (PostgreSQL locks the row)")
    from sqlalchemy import event

    mail = store.mail
    mail.deliver(_msg("first"), [account])
    before = mail.folder_status(account, ["INBOX"])[0].info
    sent: list[str] = []
    store.commits.close()
    store.engine.pool.dispose()  # connections made from here on are traced
    event.listen(store.engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(sent.append))
    with store.mail.batch():
        one = mail.append(account, "INBOX", [ToAppend(_msg("a"), 0, None, None)], BIG)
        two = mail.append(account, "INBOX", [ToAppend(_msg("b"), 0, None, None)], BIG)
    assert (one.uids, two.uids) == ([before.uidnext], [before.uidnext + 1])
    assert not [s for s in sent if s.startswith("SELECT id, uidnext, highestmodseq FROM folder")], sent
    after = mail.folder_status(account, ["INBOX"])[0].info
    assert (after.uidnext, after.highestmodseq, after.message_count) == (
        before.uidnext + 2, before.highestmodseq + 2, before.message_count + 2)

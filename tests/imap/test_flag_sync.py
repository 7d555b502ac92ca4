"""Which IMAP writes are fsynced before their tagged OK (imap.fsync_flag_changes, SQLite): by
default a change of flags only is committed without an fsync, every APPEND and EXPUNGE with one;
either way the write is committed (another connection sees it) when the OK comes, and the
connections of the pool are back at synchronous=FULL for every other writer."""
from __future__ import annotations

import re

from sqlalchemy import text

from mailserver.store import open_store
from mailserver.store.api import ANSWERED, FLAGGED
from tests.imap.conftest import server_with

FULL = 2


def _counted(running) -> dict[str, int]:
    """Count the group commit's COMMITs as the server's metrics do (imap/service.py)."""
    counts = {"synced": 0, "unsynced": 0}
    commits = running.ctx.store.commits
    commits.on_commit = lambda _s: counts.__setitem__("synced", counts["synced"] + 1)
    commits.on_unsynced_commit = lambda _s: counts.__setitem__("unsynced", counts["unsynced"] + 1)
    return counts


def _flags_in_database(cfg, account: int, uid: int) -> int | None:
    store = open_store(cfg)  # connections of its own, as another process would have
    try:
        with store.reader() as s:
            return s.scalar(text("SELECT m.flags FROM message m JOIN folder f ON f.id = m.folder_id "
                                 "WHERE f.account_id = :a AND f.name = 'INBOX' AND m.uid = :u"),
                            {"a": account, "u": uid})
    finally:
        store.dispose()


def _pool_levels(running) -> list[int]:
    """synchronous on every connection the pool holds (all checked out at once)."""
    engine = running.ctx.store.engine
    conns = [engine.connect() for _ in range(max(engine.pool.checkedin(), 1))]
    try:
        return [c.exec_driver_sql("PRAGMA synchronous").scalar() for c in conns]
    finally:
        for c in conns:
            c.close()


def _append(c) -> int:
    typ, data = c.append("INBOX", None, None, b"Subject: flags\r\n\r\nbody\r\n")
    assert typ == "OK", data
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


def test_flag_changes_commit_without_fsync_and_appends_with_one(tmp_path):
    with server_with(tmp_path / "data") as running:
        cfg, account = running.ctx.config, running.users[0][1]
        assert cfg.imap.fsync_flag_changes is False  # the default
        counts = _counted(running)
        c = running.client(0)
        c.select("INBOX")
        uid = _append(c)
        assert counts == {"synced": 1, "unsynced": 0}
        typ, _ = c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Flagged)")
        assert typ == "OK"
        assert counts == {"synced": 1, "unsynced": 1}
        assert _flags_in_database(cfg, account, uid) & FLAGGED  # committed when acknowledged
        assert set(_pool_levels(running)) == {FULL}
        c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        typ, _ = c.expunge()
        assert typ == "OK"
        assert counts == {"synced": 2, "unsynced": 2}  # EXPUNGE is fsynced
        assert _flags_in_database(cfg, account, uid) is None
        c.logout()
        assert set(_pool_levels(running)) == {FULL}


def test_fsync_flag_changes_fsyncs_every_store(tmp_path):
    with server_with(tmp_path / "data", "imap.fsync_flag_changes=true") as running:
        cfg, account = running.ctx.config, running.users[0][1]
        counts = _counted(running)
        c = running.client(0)
        c.select("INBOX")
        uid = _append(c)
        typ, _ = c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Answered)")
        assert typ == "OK"
        assert counts == {"synced": 2, "unsynced": 0}
        assert _flags_in_database(cfg, account, uid) & ANSWERED
        c.logout()

"""PostgreSQL's IMAP write lane (imap.pg_write_threads, lanes.SpillLane) on a real database and
real sockets: a user's write stuck on a row lock another connection holds (another node's long
write) does not stall another user's STORE on the same node, with the lane's one thread stuck
or with one of its two, and the stuck writes complete once the lock goes."""
from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from mailserver.lanes import SpillLane
from mailserver.provision import prepare

from tests.conftest import make_config

from .conftest import start_server


def _waiting_on_locks(conn, database: str) -> int:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (database,)).fetchone()[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_write_stuck_on_a_lock_does_not_stall_another_users_store(tmp_path, pg_url, threads):
    config = make_config(tmp_path / "data", f"imap.pg_write_threads={threads}", store_url=pg_url)
    prepare(config)
    running = start_server(config, watcher_on=False)
    url = make_url(pg_url)
    locker = psycopg.connect(url.set(drivername="postgresql").render_as_string(False))
    sessions = []
    try:
        assert isinstance(running.ctx.writes, SpillLane)
        for user in (0, 1):
            c = running.client(user)
            assert c.append("INBOX", None, None, b"Subject: x\r\n\r\nbody\r\n")[0] == "OK"
            c.logout()
        # two sessions of the first user, one of the second, each with its INBOX selected
        for user in (0, 0, 1):
            raw = running.raw(user)
            assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
            sessions.append(raw)
        first, again, other = sessions
        # the first user's INBOX row held, as another node's long write would hold it
        locker.execute("SELECT id FROM folder WHERE account_id = %s AND name = 'INBOX' FOR UPDATE",
                       (running.users[0][1],))
        first.send(b"a1 UID STORE 1 +FLAGS (\\Flagged)\r\n")  # on the lane, stuck
        if threads == 1:  # queued at once behind the stuck write, before the lane counts as stalled
            other.send(b"b UID STORE 1 +FLAGS (\\Seen)\r\n")
        again.send(b"a2 UID STORE 1 +FLAGS (\\Answered)\r\n")  # past the user's one write on the lane
        with psycopg.connect(url.set(drivername="postgresql", database="postgres").render_as_string(False),
                             autocommit=True) as watcher:
            until = time.monotonic() + 30
            while _waiting_on_locks(watcher, url.database) < 2 and time.monotonic() < until:
                time.sleep(0.05)
            assert _waiting_on_locks(watcher, url.database) == 2
            if threads == 2:  # the lane's other thread
                other.send(b"b UID STORE 1 +FLAGS (\\Seen)\r\n")
            lines = []
            while not lines or not lines[-1].startswith(b"b "):
                lines.append(other.line())
            assert lines[-1].startswith(b"b OK") and b"\\Seen" in lines[0], lines
            # answered while the first user's two writes still wait for the lock
            assert _waiting_on_locks(watcher, url.database) == 2
        locker.rollback()
        for raw, tag, flag in ((first, b"a1", b"\\Flagged"), (again, b"a2", b"\\Answered")):
            lines = []
            while not lines or not lines[-1].startswith(tag + b" "):
                lines.append(raw.line())
            assert lines[-1].startswith(tag + b" OK") and any(flag in ln for ln in lines), lines
        assert running.ctx.writes.spilled >= 1
    finally:
        locker.close()
        for raw in sessions:
            raw.close()
        running._stop()  # type: ignore[attr-defined]

"""This process's writers tell IMAP sessions of new mail through the change hub alone: the
servers here run without the FolderWatcher (the poll that would hide a lost wake-up within a
quarter of a second, and that misses it too when it polled the folder meanwhile for another
session). A delivery that lands between SELECT's snapshot and the session's subscription to
the folder is told at once; deliveries from another thread reach a session in IDLE."""
from __future__ import annotations

import pytest

from mailserver.store import mailboxes as mb
from mailserver.store.mailstore import deliver

from .conftest import Raw, start_server

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %s\r\n\r\nbody\r\n"


@pytest.fixture
def hub_only(sqlite_config):
    running = start_server(sqlite_config, watcher_on=False)
    yield running
    running._stop()


def test_mail_delivered_between_the_snapshot_and_the_subscription_is_told(hub_only, monkeypatch):
    account = hub_only.users[0][1]
    real = mb.select_folder
    delivered = []

    def select_then_deliver(store, *args):
        snapshot = real(store, *args)
        if not delivered:  # in the read lane's thread: committed and announced before SELECT listens
            delivered.extend(deliver(store, RAW % b"between", [account]))
        return snapshot

    monkeypatch.setattr(mb, "select_folder", select_then_deliver)
    a = hub_only.raw()
    lines = a.command("s", "SELECT INBOX")
    assert delivered and lines[-1].startswith(b"s OK"), lines
    assert b"* 0 EXISTS\r\n" in lines  # the snapshot was read before the delivery
    # told without asking (not NOOP, which always looks): by the end of an IDLE ended at once,
    # whose first look comes before it reads DONE
    a.send(b"i IDLE\r\n")
    lines.append(a.line())
    assert lines[-1].startswith(b"+ "), lines
    a.send(b"DONE\r\n")
    while not lines[-1].startswith(b"i "):
        lines.append(a.line())
        assert lines[-1], lines  # the server closed
    assert lines[-1] == b"i OK IDLE terminated\r\n"
    assert b"* 1 EXISTS\r\n" in lines, lines
    a.close()


def test_deliveries_from_another_thread_reach_a_session_in_idle(hub_only):
    a = hub_only.raw()
    assert a.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    a.send(b"i IDLE\r\n")
    assert a.line().startswith(b"+ ")
    for n in range(1, 21):
        deliver(hub_only.ctx.store, RAW % str(n).encode(), [hub_only.users[0][1]])
        while True:
            line = a.line()
            assert line, "the server closed"
            if line.endswith(b" EXISTS\r\n") and int(line.split()[1]) >= n:
                break
    a.send(b"DONE\r\n")
    assert a.command("n", "NOOP")[-1].startswith(b"n OK")
    a.close()


def test_stopping_the_watcher_waits_for_a_poll_in_flight(sqlite_config):
    """Cancelling the watcher's task does not stop a poll already running in a thread; closing
    the sqlite3 connection under that poll crashed serve with SIGSEGV at shutdown. stop() now
    closes the connection only once the poll is done, and a poll after stop() reads nothing."""
    import asyncio
    import threading

    from mailserver.store import open_store
    from mailserver.store.notify import ChangeHub, FolderWatcher

    store = open_store(sqlite_config)
    watcher = FolderWatcher(store, ChangeHub(), interval=0.01)

    async def scenario():
        watcher.start()
        assert watcher.poll() == []  # opens the watcher's own connection
        conn = watcher._conn
        in_poll = threading.Event()
        release = threading.Event()

        def poll_in_flight():  # as a poll holds the connection while its statement runs
            with watcher._conn_lock:
                in_poll.set()
                release.wait(10)
                return conn.execute("SELECT count(*) FROM folder").fetchall()

        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(None, poll_in_flight)
        assert await loop.run_in_executor(None, in_poll.wait, 10)
        stopping = asyncio.ensure_future(watcher.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # waits for the poll, the connection still open under it
        release.set()
        assert (await running)[0][0] >= 0
        await stopping
        assert watcher._conn is None and watcher.poll() == []

    asyncio.run(scenario())
    store.engine.dispose()


def test_a_cancel_of_the_watchers_stop_reaches_its_caller(sqlite_config):
    """stop() cancels the watcher's task and waits for its end; a cancel of stop() itself (a
    shutdown given up on) arriving meanwhile is the caller's, never swallowed with the task's."""
    import asyncio

    from mailserver.store import open_store
    from mailserver.store.notify import ChangeHub, FolderWatcher

    store = open_store(sqlite_config)
    watcher = FolderWatcher(store, ChangeHub(), interval=0.01)

    async def scenario():
        watcher.start()
        stopping = asyncio.ensure_future(watcher.stop())
        await asyncio.sleep(0)  # stop() has cancelled the task and waits for its end
        assert not stopping.done()
        stopping.cancel()
        await asyncio.wait([stopping])
        assert stopping.cancelled()
        await watcher.stop()  # a later stop still ends it
        assert watcher._task is None and watcher.poll() == []

    asyncio.run(scenario())
    store.engine.dispose()


def test_a_drop_run_in_the_servers_process_reaches_a_session_in_idle(hub_only):
    """On SQLite the pipeline writes through a connection pool of its own (its own page cache);
    it still tells the mail store of the registry it runs for, whose hub this server's sessions
    listen on (with no watcher here, nothing else would wake the session)."""
    from delivery.catalog import load_agencies, load_catalog
    from delivery.runner import run_drop
    from mailserver.config import REPO_ROOT
    from mailserver.registry.agencies import add_agency, grant
    from mailserver.registry.citizens import add_citizen

    reg = hub_only.ctx.registry
    templates = REPO_ROOT / "templates"
    info = load_agencies(templates)["social-security"]
    add_agency(reg, "social-security", info["name"], [info["sender"]], "agency-password-1")
    grant(reg, "social-security", ["pension-statement"])
    assert load_catalog(templates)["pension-statement"].agency == "social-security"
    address = add_citizen(reg, "陈建国", "330102196804120318", password="citizen-pw-1").address  # the sample's first row
    a = Raw(hub_only.port)
    assert a.command("l", f'LOGIN "{address}" "citizen-pw-1"')[-1].startswith(b"l OK")
    assert b"* 0 EXISTS\r\n" in a.command("s", "SELECT INBOX")
    a.send(b"i IDLE\r\n")
    assert a.line().startswith(b"+ ")
    result = run_drop(reg, templates / "pension-statement" / "sample.csv", "social-security", "pension-statement")
    assert result.summary.counts["delivered"] >= 1
    line = a.line()  # the socket's timeout (30 s) bounds the wait; without the hub it would never come
    assert line == b"* 1 EXISTS\r\n", line
    a.send(b"DONE\r\n")
    lines = [a.line()]
    while not lines[-1].startswith(b"i "):
        lines.append(a.line())
        assert lines[-1], lines  # the server closed
    assert lines[-1] == b"i OK IDLE terminated\r\n", lines
    a.close()

"""SQLite writers queue on a file lock beside the database (store/writequeue.py), on real files and
real processes: a writer waits for the one before it in the kernel, never reaching SQLite's busy
handler meanwhile; the wait is bounded by its timeout and a wait given up leaves no stale lock;
a writer killed mid-transaction blocks nobody; two processes writing at once through their
group commits lose nothing."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading

import pytest
from sqlalchemy import text

from mailserver.store import Store
from mailserver.store.driver import driver_execute
from mailserver.store.writequeue import SUFFIX, factory


def _connect(path, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection as the store makes them, but with SQLite's own busy wait off (timeout=0): a
    BEGIN IMMEDIATE that reached SQLite while another writer held the lock would fail at once."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False, factory=factory(timeout))
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "q.db"
    conn = _connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
    conn.close()
    return path


def test_a_writer_waits_for_the_one_before_it_in_the_queue_not_in_sqlite(db):
    first, second = _connect(db), _connect(db)
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO t (who) VALUES ('first')")
    result: list = []
    began = threading.Event()

    def write() -> None:
        try:
            second.execute("BEGIN IMMEDIATE")  # blocks on the file lock until `first` commits
            began.set()
            result.append(second.execute("SELECT who FROM t").fetchall())
            second.execute("INSERT INTO t (who) VALUES ('second')")
            second.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - reported below
            result.append(exc)
            began.set()

    waiter = threading.Thread(target=write)
    waiter.start()
    assert not began.wait(0.5), result  # still waiting (with SQLite's wait off, it would have failed)
    first.execute("COMMIT")
    waiter.join(30)
    assert result == [[("first",)]]  # it began after the COMMIT and saw it
    assert [r[0] for r in first.execute("SELECT who FROM t ORDER BY id")] == ["first", "second"]
    assert os.path.exists(f"{db}{SUFFIX}")
    first.close()
    second.close()


def test_the_wait_is_bounded_and_a_wait_given_up_leaves_no_stale_lock(db):
    holder, impatient, third = _connect(db), _connect(db, timeout=0.2), _connect(db, timeout=0.2)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        impatient.execute("BEGIN IMMEDIATE")
    assert not impatient.in_transaction
    holder.execute("COMMIT")
    # the given-up wait's helper takes and drops the lock on its own; the connection's next BEGIN
    # holds it for real, so a third writer must wait (and here give up) while it does
    impatient.execute("BEGIN IMMEDIATE")
    impatient.execute("INSERT INTO t (who) VALUES ('impatient')")
    for _ in range(3):
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            third.execute("BEGIN IMMEDIATE")
    impatient.execute("COMMIT")
    third.execute("BEGIN IMMEDIATE")
    assert third.execute("SELECT who FROM t").fetchall() == [("impatient",)]
    third.execute("ROLLBACK")
    for c in (holder, impatient, third):
        c.close()


def _hold_and_die(path: str, ready) -> None:
    conn = _connect(path)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (who) VALUES ('killed')")
    ready.set()
    threading.Event().wait(60)  # killed meanwhile


def test_a_writer_killed_mid_transaction_blocks_nobody(db):
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    child = mp.Process(target=_hold_and_die, args=(str(db), ready))
    child.start()
    assert ready.wait(60)
    conn = _connect(db, timeout=0.2)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        conn.execute("BEGIN IMMEDIATE")  # it holds the lock
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    conn2 = _connect(db)
    conn2.execute("BEGIN IMMEDIATE")  # the kernel dropped the dead writer's lock
    assert conn2.execute("SELECT who FROM t").fetchall() == []  # and SQLite its transaction
    conn2.execute("COMMIT")
    conn.close()
    conn2.close()


def _writer_process(url: str, name: str, threads: int, each: int) -> None:
    store = Store(url)

    def work(t: int) -> None:
        for i in range(each):
            with store.commits.write() as session:
                driver_execute(session, "INSERT INTO t (who) VALUES (?)", [(f"{name}-{t}-{i}",)])

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    store.dispose()


def test_two_processes_writing_at_once_through_their_group_commits_lose_nothing(db):
    url = f"sqlite:///{db}"
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_writer_process, args=(url, name, 4, 150)) for name in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    store = Store(url)
    with store.reader() as s:
        rows = [r[0] for r in s.execute(text("SELECT who FROM t"))]
    store.dispose()
    assert len(rows) == len(set(rows)) == 2 * 4 * 150
    assert {r.split("-")[0] for r in rows} == {"a", "b"}

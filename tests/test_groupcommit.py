"""The group commit's transaction (store/groupcommit.py) on a real SQLite database: BEGIN IMMEDIATE
and COMMIT go through the driver, and the writers' session still works for a statement run
through SQLAlchemy in that same transaction; a failed write rolls back alone, a failed COMMIT
fails the batch with StorageError and leaves the pool's connection usable."""
from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from mailserver.errors import StorageError
from mailserver.store import Store
from mailserver.store.driver import driver_execute, driver_rows


@pytest.fixture
def sqlite_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gc.db'}")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                             "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    yield store
    store.dispose()


def _seen_elsewhere(tmp_path, sql: str) -> list[tuple]:
    """Rows as another process sees them (a connection of its own, no write lock asked)."""
    conn = sqlite3.connect(tmp_path / "gc.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_driver_write_and_a_session_write_share_one_commit(sqlite_store, tmp_path):
    commits = sqlite_store.commits
    told: list[float] = []
    commits.on_commit = told.append
    with commits.batch():
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(1,)])
        with commits.write() as session:  # SQLAlchemy joins the transaction the batch began
            session.execute(text("INSERT INTO parent (id) VALUES (2)"))
            assert driver_rows(session, "SELECT count(*) FROM parent") == [(2,)]
        assert _seen_elsewhere(tmp_path, "SELECT id FROM parent") == []  # not committed yet
    assert _seen_elsewhere(tmp_path, "SELECT id FROM parent ORDER BY id") == [(1,), (2,)]
    assert len(told) == 1
    with commits.write() as session:  # the next transaction, on the driver alone again
        driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(3,)])
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent") == [(3,)]
    assert len(told) == 2


def test_a_failed_write_rolls_back_alone(sqlite_store, tmp_path):
    commits = sqlite_store.commits
    with commits.batch():
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(1,)])
        with pytest.raises(RuntimeError), commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(2,)])
            raise RuntimeError("the writer's own failure")
        with pytest.raises(RuntimeError), commits.write() as session:
            session.execute(text("INSERT INTO parent (id) VALUES (3)"))
            raise RuntimeError("and one through the session")
    assert _seen_elsewhere(tmp_path, "SELECT id FROM parent") == [(1,)]


def test_a_failed_commit_fails_the_batch_and_the_next_one_works(sqlite_store, tmp_path):
    commits = sqlite_store.commits
    with pytest.raises(StorageError) as failed, commits.batch():
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(1,)])
        with commits.write() as session:  # a deferred foreign key: only COMMIT refuses it
            driver_execute(session, "INSERT INTO child (id, parent_id) VALUES (?, ?)", [(1, 99)])
    assert "FOREIGN KEY" in str(failed.value.__cause__)
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent") == [(0,)]
    for _ in range(3):  # the pool's connections are out of the failed transaction
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (NULL)", [()])
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent") == [(3,)]
    with pytest.raises(StorageError), commits.write() as session:  # the same through the session
        session.execute(text("INSERT INTO child (id, parent_id) VALUES (2, 99)"))
    with commits.write() as session:
        driver_execute(session, "INSERT INTO parent (id) VALUES (NULL)", [()])
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent, child") == [(0,)]
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent") == [(4,)]


def test_an_unsynced_batch_sets_the_level_back(sqlite_store):
    """The kept connection stays at NORMAL between unsynced batches, is at FULL again inside the
    next durable batch, and goes back to the pool at FULL."""
    commits = sqlite_store.commits
    told = {"synced": 0, "unsynced": 0}
    commits.on_commit = lambda _s: told.__setitem__("synced", told["synced"] + 1)
    commits.on_unsynced_commit = lambda _s: told.__setitem__("unsynced", told["unsynced"] + 1)
    with commits.batch(durable=False):
        with commits.write() as session:
            assert driver_rows(session, "PRAGMA synchronous") == [(1,)]  # NORMAL
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(1,)])
    assert told == {"synced": 0, "unsynced": 1}
    with commits.write() as session:  # durable, on the connection kept
        assert driver_rows(session, "PRAGMA synchronous") == [(2,)]  # FULL
        driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(2,)])
    assert told == {"synced": 1, "unsynced": 1}
    with commits.batch(durable=False):
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(3,)])
    commits.close()  # as Store.dispose does: the kept connection back to the pool
    assert sqlite_store.engine.pool.checkedout() == 0
    with sqlite_store.engine.connect() as conn:  # the one connection the pool holds
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_a_run_of_unsynced_batches_sets_the_level_once(sqlite_store):
    """Flag changes in a row (the IMAP write lane's unsynced batches) on the kept connection:
    the level is read and lowered by the first, and not set back and lowered again by each."""
    commits = sqlite_store.commits
    pragmas: list[str] = []
    for i in range(4):
        with commits.batch(durable=False):
            with commits.write() as session:
                if i == 0:
                    driver_rows(session, "SELECT 1")
                    session.info["civicmail_pinned_dbapi"][1].set_trace_callback(
                        lambda sql: pragmas.append(sql) if sql.startswith("PRAGMA") else None)
                driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(i,)])
    assert pragmas == []  # the first batch's two came before the trace; none since
    with commits.write() as session:
        driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(9,)])
    assert pragmas == ["PRAGMA synchronous=2"]  # raised once, for the durable batch


def test_the_connection_kept_between_batches_goes_back_to_the_pool(sqlite_store, tmp_path):
    commits = sqlite_store.commits
    for i in range(3):
        with commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(i,)])
        assert sqlite_store.engine.pool.checkedout() == 1  # the one kept for the next batch
    commits.close()  # as Store.dispose does
    assert sqlite_store.engine.pool.checkedout() == 0
    with commits.write() as session:  # a batch after it takes one from the pool again
        driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(3,)])
    assert _seen_elsewhere(tmp_path, "SELECT count(*) FROM parent") == [(4,)]


def test_a_locked_database_at_begin_fails_the_write_and_keeps_nothing(sqlite_store, tmp_path):
    other = sqlite3.connect(tmp_path / "gc.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        sqlite_store.engine.pool.dispose()
        with sqlite_store.engine.connect() as conn:  # don't wait busy_timeout's 30 s for it
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")
        with pytest.raises(OperationalError, match="locked"), sqlite_store.commits.write() as session:
            driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(1,)])
        assert sqlite_store.engine.pool.checkedout() == 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    with sqlite_store.commits.write() as session:
        driver_execute(session, "INSERT INTO parent (id) VALUES (?)", [(2,)])
    assert _seen_elsewhere(tmp_path, "SELECT id FROM parent") == [(2,)]

"""The store on both engines: migrations from empty, models agree with migrations, UIDs."""
from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from mailserver.errors import QuotaExceeded
from mailserver.store import Store, migrate
from mailserver.store.mailstore import NewMessage, deliver, insert_messages
from mailserver.store.models import Base, Folder, Message
from mailserver.registry.citizens import add_citizen
from mailserver.identity import idnumber

import datetime as dt


def test_migrations_run_up_from_empty(store_url):
    store = Store(store_url)
    try:
        assert migrate.current_revision(store) is None
        migrate.upgrade(store)
        assert migrate.current_revision(store) == migrate.head_revision()
        assert migrate.is_current(store)
        tables = set(inspect(store.engine).get_table_names())
        assert {"citizen", "account", "folder", "message", "content", "agency", "agency_credential", "agency_grant",
                "notice_type", "drop", "drop_row", "audit_log", "outbound_message"} <= tables
        migrate.upgrade(store)  # a second upgrade is a no-op
        assert migrate.is_current(store)
    finally:
        store.dispose()


def _not_a_partition(name, type_, parent_names) -> bool:
    return not (type_ == "table" and re.fullmatch(r"(notice|message)_p\d\d", name or ""))


def test_models_and_migrations_agree(store_url):
    """Every model change comes with its migration (what `alembic check` does)."""
    store = Store(store_url)
    try:
        migrate.upgrade(store)
        with store.engine.connect() as conn:
            # the partitions of a partitioned table (PostgreSQL, migrations 0026 and 0028) are not models
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": _not_a_partition})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        store.dispose()


def test_login_days_start_from_each_accounts_last_login(store_url):
    """Migration 0006 seeds ``login_day`` with what was known before it: the last login."""
    store = Store(store_url)
    try:
        migrate.upgrade(store, "0005")
        with store.engine.begin() as conn:
            for n, last in ((1, "2026-11-20 08:30:00"), (2, None)):
                conn.execute(text("INSERT INTO account (id, address, state, created_at, last_login_at) "
                                  "VALUES (:id, :a, 'active', '2026-01-01 00:00:00', :last)"),
                             {"id": n, "a": f"u{n}@x.cn", "last": last})
        migrate.upgrade(store)
        with store.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text("SELECT account_id, day FROM login_day"))]
        assert [(a, str(d)) for a, d in rows] == [(1, "2026-11-20")]
    finally:
        store.dispose()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.dispose()


def _account(registry, n=1, name="张伟"):
    made = add_citizen(registry, name, idnumber.make("330106", dt.date(1980, 1, n), n), password="long enough pw")
    with registry.store.reader() as s:
        from mailserver.store.models import Account

        return s.scalar(select(Account.id).where(Account.address == made.address))


def test_uids_grow_and_content_is_stored_once(registry, store):
    a, b = _account(registry, 1), _account(registry, 2, "王芳")
    first = deliver(store, b"Subject: one\r\n\r\nbody\r\n", [a, b])
    second = deliver(store, b"Subject: two\r\n\r\nbody\r\n", [a])
    assert [d.uid for d in first] == [1, 1] and second[0].uid == 2
    with store.reader() as s:
        inbox = s.scalar(select(Folder).where(Folder.account_id == a, Folder.name == "INBOX"))
        assert (inbox.uidnext, inbox.message_count) == (3, 2)
        assert inbox.highestmodseq > 1
        contents = s.execute(select(Message.content_id).where(Message.id.in_([d.message_id for d in first]))).scalars()
        assert len(set(contents)) == 1


def test_a_failed_delivery_leaves_nothing_behind(registry, store):
    a = _account(registry, 1)
    with pytest.raises(QuotaExceeded):
        deliver(store, b"Subject: big\r\n\r\n" + b"x" * 2000, [a], quota_default=1000)
    with store.reader() as s:
        assert s.scalar(select(Folder.uidnext).where(Folder.account_id == a, Folder.name == "INBOX")) == 1
        assert s.execute(text("SELECT count(*) FROM content")).scalar() == 0


def test_insert_messages_rolls_back_with_its_transaction(registry, store):
    a = _account(registry, 1)
    with pytest.raises(RuntimeError):
        with store.session() as s:
            insert_messages(s, [NewMessage(account_id=a, raw=b"Subject: x\r\n\r\ny\r\n")])
            raise RuntimeError("crash before commit")
    with store.reader() as s:
        assert s.execute(text("SELECT count(*) FROM message")).scalar() == 0
        assert s.scalar(select(Folder.uidnext).where(Folder.account_id == a, Folder.name == "INBOX")) == 1


def test_a_pooled_connections_kept_result_is_bounded_by_the_configuration(tmp_path, pg_url):
    """store.keep_result_rows reaches driver_rows over a real PostgreSQL connection: a result of up
    to that many rows stays with the connection's kept cursor until its next read; a larger
    one's cursor is closed at once, its rows let go, and the next read keeps a new one."""
    from mailserver.store import driver, open_store
    from tests.conftest import make_config

    series = "SELECT generate_series(1, ?::int)"
    store = open_store(make_config(tmp_path / "data", "store.keep_result_rows=3", store_url=pg_url))
    default = Store(pg_url)
    try:
        with driver.raw_reader(store) as read:
            assert driver.driver_rows(read, series, 3) == [(1,), (2,), (3,)]
            kept = driver._kept_cursors[read.dbapi]
            cursor = kept.cursor
            assert kept.limit == 3 and cursor.pgresult.ntuples == 3  # held with the connection
            assert len(driver.driver_rows(read, series, 4)) == 4
            assert kept.cursor is None and cursor.closed and cursor.pgresult is None
            driver.driver_rows(read, series, 2)
            assert kept.cursor is not None and kept.cursor is not cursor
        with driver.raw_reader(default) as read:  # the default bound: 1,000
            driver.driver_rows(read, series, 4)
            kept = driver._kept_cursors[read.dbapi]
            assert kept.limit == 1000 and kept.cursor.pgresult.ntuples == 4
    finally:
        store.dispose()
        default.dispose()

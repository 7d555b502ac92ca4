"""Every migration's downgrade keeps the data it does not drop, on both engines: a city with
citizens, messages in folders, a drop and its rows is walked down one revision at a time and
up again, and every table present on both sides of a step keeps every row."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, text

from mailserver.identity import idnumber
from mailserver.registry.agencies import add_agency
from mailserver.registry.citizens import add_citizen
from mailserver.store import migrate
from mailserver.store.mailstore import deliver
from mailserver.store.models import Drop, DropRow, Notice


def _populate(registry, store) -> None:
    accounts = []
    for n, name in enumerate(("张伟", "王芳", "李娜"), start=1):
        made = add_citizen(registry, name, idnumber.make("330106", dt.date(1980, 1, n), n), password="long enough pw")
        with store.reader() as s:
            accounts.append(s.execute(text("SELECT id FROM account WHERE address = :a"), {"a": made.address}).scalar())
    for n in range(5):
        deliver(store, f"Subject: notice {n}\r\n\r\nbody {n}\r\n".encode(), accounts[: 1 + n % 3])
    add_agency(registry, "tax", "税务局", ["notice@tax.hz.example.cn"], "agency password 1", actor="test")
    with store.session() as s:
        notice_type = s.execute(text("SELECT min(id) FROM notice_type")).scalar()
        drop = Drop(agency_id="tax", notice_type_id=notice_type, filename="d.csv", sha256="0" * 64, state="done",
                    source="cli", columns="[]")
        s.add(drop)
        s.flush()
        s.add_all([DropRow(drop_id=drop.id, line=n, status="delivered") for n in (2, 3)])
        # notices of three accounts: on PostgreSQL 0026 moves them into partitions and back
        s.add_all([Notice(idempotency_key=f"{n:032x}", agency_id="tax", notice_type_id=notice_type, account_id=a,
                          drop_id=drop.id) for n, a in enumerate(accounts)])


def _counts(store) -> dict[str, int]:
    tables = [t for t in inspect(store.engine).get_table_names() if t != "alembic_version"]
    with store.engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}


def _revisions() -> list[str]:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def test_every_downgrade_and_upgrade_keeps_the_data(registry, store):
    # bodies in the database, as before 0017: below it there is no blob store to read them from
    # (a downgrade with bodies in the blob store is refused: test_blobs.py)
    store.blobs = None
    _populate(registry, store)
    full = _counts(store)
    assert full["message"] == 9 and full["folder"] >= 15 and full["citizen"] == 3 and full["drop_row"] == 2
    assert full["notice"] == 3
    revisions = _revisions()
    assert revisions[-1] == migrate.head_revision() and len(revisions) >= 7
    store.engine.dispose()  # the fixtures' pooled connections must not hold the old schema
    for below in reversed(revisions[:-1]):  # head-1 ... the first revision
        migrate.downgrade(store, below)
        assert migrate.current_revision(store) == below
        now = _counts(store)
        assert now == {t: full[t] for t in now}, f"downgrade to {below} lost rows"
    lowest = set(_counts(store))  # tables every revision has: none of their rows may go
    for above in revisions[1:]:
        migrate.upgrade(store, above)
        now = _counts(store)
        assert {t: now[t] for t in lowest} == {t: full[t] for t in lowest}, f"upgrade to {above} lost rows"
    assert migrate.is_current(store)
    assert _counts(store)["message"] == 9
    with store.engine.connect() as conn:
        keys = conn.execute(text("SELECT idempotency_key FROM notice ORDER BY idempotency_key")).scalars().all()
    assert keys == [f"{n:032x}" for n in range(3)]


def test_0024_fills_each_drops_rows_by_outcome_from_its_rows(registry, store):
    store.blobs = None
    _populate(registry, store)  # a drop with two delivered rows
    store.engine.dispose()
    migrate.downgrade(store, "0023")
    with store.engine.begin() as conn:
        drop_id = conn.execute(text('SELECT min(id) FROM "drop"')).scalar()
        for line, status in enumerate(("unmatched", "unmatched", "invalid", "duplicate", "opted-out", "held",
                                       "failed", "failed", "failed"), start=4):
            conn.execute(text("INSERT INTO drop_row (drop_id, line, status) VALUES (:d, :l, :s)"),
                         {"d": drop_id, "l": line, "s": status})
    migrate.upgrade(store, "0024")
    with store.engine.connect() as conn:
        row = conn.execute(text('SELECT rows_invalid, rows_unmatched, rows_held, rows_opted_out, rows_duplicate, '
                                'rows_failed FROM "drop" WHERE id = :d'), {"d": drop_id}).one()
    assert tuple(row) == (1, 2, 1, 1, 1, 3)
    migrate.upgrade(store, "head")
    assert migrate.is_current(store)


def test_downgrade_below_0026_refuses_a_key_delivered_to_two_accounts(registry, store):
    """From 0026 a key is unique per account; the older constraint (one per key) could not hold
    both rows, so the downgrade is refused and changes nothing."""
    store.blobs = None
    _populate(registry, store)
    with store.session() as s:
        first = s.query(Notice).order_by(Notice.id).first()
        other = s.execute(text("SELECT min(account_id) FROM notice WHERE account_id <> :a"),
                          {"a": first.account_id}).scalar()
        s.add(Notice(idempotency_key=first.idempotency_key, agency_id="tax", notice_type_id=first.notice_type_id,
                     account_id=other, drop_id=first.drop_id))
    store.engine.dispose()
    with pytest.raises(RuntimeError, match="delivered to more than one account"):
        migrate.downgrade(store, "0024")
    assert migrate.is_current(store)
    assert _counts(store)["notice"] == 4

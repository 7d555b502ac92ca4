"""``notice`` hash-partitioned by account on PostgreSQL (migration 0026): the table is
partitioned, each notice is in the partition of its account, and a drop run again through the
CLI still delivers nothing twice, the idempotency key (unique per account) refusing duplicates."""
from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from dropcli import LICENCE, civicmail, run_drop
from drophelpers import make_city
from mailcheck import count_inbox_messages


@pytest.fixture
def pg_city(pg_registry):
    make_city(pg_registry)
    return pg_registry


def _one(store, sql: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def test_notice_is_hash_partitioned_by_account(pg_city):
    store = pg_city.store
    [(strategy, columns)] = _one(store, "SELECT p.partstrat, p.partattrs::text FROM pg_partitioned_table p "
                                        "WHERE p.partrelid = 'notice'::regclass")
    assert strategy == "h"
    [(account_attnum,)] = _one(store, "SELECT attnum FROM pg_attribute WHERE attrelid = 'notice'::regclass "
                                      "AND attname = 'account_id'")
    assert columns == str(account_attnum)
    partitions = [p for (p,) in _one(store, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                            "WHERE i.inhparent = 'notice'::regclass ORDER BY c.relname")]
    assert partitions == [f"notice_p{n:02d}" for n in range(16)]
    # the idempotency key's unique index is partitioned with the table: one in each partition
    [(count,)] = _one(store, "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
                             "WHERE c.relname = 'uq_notice_idempotency_key_account'")
    assert count == 16


def test_rows_land_in_their_accounts_partition_and_a_rerun_delivers_once(pg_city):
    config, store = pg_city.config, pg_city.store
    on_pg = ("--set", f'store.url="{store.url}"')  # the fixture's config names it as an override
    first = run_drop(config, LICENCE, *on_pg)
    assert first.returncode == 0, first.stderr
    rows = _one(store, "SELECT account_id, idempotency_key, tableoid::regclass::text FROM notice ORDER BY account_id")
    assert len(rows) == 3 and len({a for a, _, _ in rows}) == 3
    for account_id, _, partition in rows:
        remainder = int(partition.removeprefix("notice_p"))
        [(fits,)] = _one(store, "SELECT satisfies_hash_partition('notice'::regclass, 16, :r, CAST(:a AS bigint))",
                         r=remainder, a=account_id)
        assert fits, f"account {account_id} is in {partition}"
        [(alone,)] = _one(store, f"SELECT count(*) FROM {partition} WHERE account_id = :a", a=account_id)
        assert alone == 1

    # the same bytes are refused as a drop already run; --force runs them, every row a duplicate
    again = run_drop(config, LICENCE, *on_pg)
    assert again.returncode != 0 and "already run as drop" in again.stderr + again.stdout
    forced = civicmail(config, *on_pg, "drop", "run", str(LICENCE), "--agency", "traffic-police",
                       "--notice-type", "licence-renewal", "--force")
    assert forced.returncode == 0, forced.stderr
    [(notices,)] = _one(store, "SELECT count(*) FROM notice")
    assert notices == 3 and count_inbox_messages(store) == 3
    [(duplicates,)] = _one(store, "SELECT count(*) FROM drop_row WHERE status = 'duplicate'")
    assert duplicates == 3

    # a writer that skipped the check (a second node racing this one) is refused by the key itself
    account_id, key, _ = rows[0]
    with pytest.raises(exc.IntegrityError, match=r"Key \(idempotency_key, account_id\)"):
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO notice (idempotency_key, agency_id, notice_type_id, account_id, "
                              "delivered_at) VALUES (:k, 'traffic-police', 'licence-renewal', :a, now())"),
                         {"k": key, "a": account_id})
    [(notices,)] = _one(store, "SELECT count(*) FROM notice")
    assert notices == 3


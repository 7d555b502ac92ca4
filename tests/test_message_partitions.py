"""``message`` hash-partitioned by account on PostgreSQL (migrations 0027, 0028): an upgrade from
0026 with messages in place keeps every message, flag and UID (and puts each in its account's
partition), the downgrade gives the same rows back; and every statement on ``message`` an IMAP
session issues over a real socket (SELECT, FETCH, SEARCH, SORT, STORE, COPY, MOVE, APPEND,
EXPUNGE, STATUS) is planned to read one partition, as its ``EXPLAIN`` says."""
from __future__ import annotations

import datetime as dt
import re

import psycopg
import pytest
from sqlalchemy import text

from mailserver.identity import idnumber
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.registry.citizens import add_citizen
from mailserver.store import mailboxes as mb
from mailserver.store import migrate, open_store
from mailserver.store.leaves import partition_of
from mailserver.store.mailstore import deliver
from mailserver.store.models.mail import DELETED, FLAGGED, SEEN

from tests.conftest import make_config

PARTITIONS = 16
#: the columns of a message that 0026 already had, as a migration must keep them
KEPT = "id, folder_id, uid, modseq, flags, keywords, internaldate, savedate, size, content_id"


def _rows(store, sql: str, **params) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _partitions(store) -> list[str]:
    return [p for (p,) in _rows(store, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                       "WHERE i.inhparent = 'message'::regclass ORDER BY c.relname")]


def _in_its_partition(store) -> None:
    """Every message is in the partition its account hashes to, and names its folder's account."""
    rows = _rows(store, "SELECT m.account_id, f.account_id, m.tableoid::regclass::text FROM message m "
                        "JOIN folder f ON f.id = m.folder_id")
    assert rows
    for account_id, folder_account, partition in rows:
        assert account_id == folder_account
        [(fits,)] = _rows(store, "SELECT satisfies_hash_partition('message'::regclass, :n, :r, CAST(:a AS bigint))",
                          n=PARTITIONS, r=int(partition.removeprefix("message_p")), a=account_id)
        assert fits, f"account {account_id} is in {partition}"


@pytest.fixture
def pg_city(tmp_path, pg_url):
    config = make_config(tmp_path / "pg", store_url=pg_url)
    prepare(config)
    store = open_store(config)
    registry = Registry(config, store)
    accounts = []
    for n, name in enumerate(("张伟", "王芳", "李娜", "刘洋"), start=1):
        made = add_citizen(registry, name, idnumber.make("330106", dt.date(1980, 1, n), n), password="long enough pw")
        accounts += [a for (a,) in _rows(store, "SELECT id FROM account WHERE address = :a", a=made.address)]
    yield store, accounts
    store.dispose()


def test_message_is_hash_partitioned_by_account(pg_city):
    store, _ = pg_city
    [(strategy, columns)] = _rows(store, "SELECT partstrat, partattrs::text FROM pg_partitioned_table "
                                         "WHERE partrelid = 'message'::regclass")
    [(account_attnum,)] = _rows(store, "SELECT attnum FROM pg_attribute WHERE attrelid = 'message'::regclass "
                                       "AND attname = 'account_id'")
    assert (strategy, columns) == ("h", str(account_attnum))
    assert _partitions(store) == [f"message_p{n:02d}" for n in range(PARTITIONS)]
    [(pk,)] = _rows(store, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_message'")
    assert pk == "PRIMARY KEY (account_id, id)"
    # the unique key of a UID in its folder is in every partition, and holds
    for index in ("uq_message_account_folder_uid", "ix_message_account_folder_modseq"):
        [(count,)] = _rows(store, "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
                                  "WHERE c.relname = :i", i=index)
        assert count == PARTITIONS, index


def test_upgrade_from_0026_keeps_every_message_flag_and_uid_and_the_downgrade_gives_them_back(pg_city):
    store, accounts = pg_city
    for n in range(12):
        deliver(store, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), accounts[: 1 + n % len(accounts)])
    for account in accounts[:2]:
        inbox = mb.find_folder(store, account, "INBOX")
        mb.store_flags(store, account, inbox.id, [(1, 2)], "+", SEEN | FLAGGED, ["$Notice"])
        mb.store_flags(store, account, inbox.id, [(3, 3)], "+", DELETED, [])
        mb.expunge(store, account, inbox.id)  # a gap in the UIDs
        mb.copy_messages(store, account, inbox.id, [(4, 6)], "Archive", True, 10**9)  # MOVE
    store.engine.dispose()

    migrate.downgrade(store, "0026")
    assert _rows(store, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'message' "
                        "AND column_name = 'account_id'") == [(0,)]
    assert _rows(store, "SELECT relkind FROM pg_class WHERE relname = 'message'") == [("r",)]
    before = _rows(store, f"SELECT {KEPT} FROM message ORDER BY id")
    assert len(before) == 30 - 2 and {r[4] for r in before} >= {0, SEEN | FLAGGED}
    accounts_of = dict(_rows(store, "SELECT id, account_id FROM folder"))

    migrate.upgrade(store)
    assert migrate.is_current(store)
    after = _rows(store, f"SELECT {KEPT}, account_id FROM message ORDER BY id")
    assert [r[:-1] for r in after] == before
    assert all(r[-1] == accounts_of[r[1]] for r in after)
    assert len({r[-1] for r in after}) == len(accounts)
    _in_its_partition(store)
    # the id sequence carried on: a new message takes the next id
    [(newest,)] = _rows(store, "SELECT max(id) FROM message")
    [delivered] = deliver(store, b"Subject: after\r\n\r\nx\r\n", accounts[:1])
    assert delivered.message_id > newest

    store.engine.dispose()
    migrate.downgrade(store, "0026")
    again = _rows(store, f"SELECT {KEPT} FROM message ORDER BY id")
    assert again[:-1] == before and again[-1][0] == delivered.message_id
    assert _rows(store, "SELECT relkind FROM pg_class WHERE relname = 'message'") == [("r",)]
    migrate.upgrade(store)
    assert len(_rows(store, "SELECT id FROM message")) == len(before) + 1
    _in_its_partition(store)


#: a statement that reads or writes rows of ``message`` or of one of its partitions (store/leaves.py)
#: (an INSERT into ``message``: its row goes to its account's partition by the partition key itself)
_ON_MESSAGE = re.compile(r"\b(FROM|JOIN|UPDATE|DELETE FROM)\s+message(_p\d\d)?\b|\bINSERT INTO\s+message_p\d\d\b",
                         re.IGNORECASE)
#: a partition's name in a statement (``_named``)
_LEAF = re.compile(r"\bmessage_p\d\d\b")


class Recorder:
    """Every statement psycopg executes in this process, with its parameters (the database
    still runs each one; this only writes down what was asked of it)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.on = False

    def install(self, monkeypatch) -> None:
        real = psycopg.Cursor.execute
        recorder = self

        def execute(cursor, query, params=None, **kwargs):
            if recorder.on and isinstance(query, str) and _ON_MESSAGE.search(query):
                recorder.seen.append((query, params))
            return real(cursor, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)


def test_every_statement_an_imap_session_makes_on_message_reads_one_partition(tmp_path, pg_url, monkeypatch):
    from tests.imap.conftest import start_server

    config = make_config(tmp_path / "data", store_url=pg_url)
    prepare(config)
    recorder = Recorder()
    recorder.install(monkeypatch)
    running = start_server(config, watcher_on=False)
    store = running.ctx.store
    try:
        account = running.users[0][1]
        for n in range(5):
            deliver(store, f"From: a@x.example\r\nSubject: {n}\r\n\r\nneedle {n}\r\n".encode(),
                    [u for _, u in running.users])
        recorder.on = True
        c = running.client()
        try:
            assert c.select("INBOX")[0] == "OK"
            assert c.fetch("1:*", "(FLAGS RFC822.SIZE ENVELOPE)")[0] == "OK"
            assert c.fetch("2", "(BODY[])")[0] == "OK"
            assert c.uid("FETCH", "1:3", "(BODY.PEEK[HEADER])")[0] == "OK"
            assert c.search(None, "BODY", "needle")[0] == "OK"
            assert c.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")[0] == "OK"
            assert c.store("1:2", "+FLAGS", "(\\Seen $Notice)")[0] == "OK"
            assert c.copy("1", "Archive")[0] == "OK"
            assert c._simple_command("UID", "MOVE", "2", "Archive")[0] == "OK"
            assert c.append("INBOX", "(\\Flagged)", None, b"Subject: appended\r\n\r\nx\r\n")[0] == "OK"
            assert c.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
            assert c.expunge()[0] == "OK"
            assert c.status("Archive", "(MESSAGES UNSEEN RECENT)")[0] == "OK"
            assert c.noop()[0] == "OK"
        finally:
            c.logout()
        recorder.on = False
    finally:
        running._stop()  # type: ignore[attr-defined]

    statements = {}
    for sql, params in recorder.seen:
        statements.setdefault(sql, params)  # one EXPLAIN per distinct statement
    # what must have been seen (the hot statements of each command): the list fails if one is gone
    expected = ("SELECT uid, flags, keywords FROM message WHERE account_id", "LEFT JOIN message m ON m.account_id",
                "ORDER BY message.uid LIMIT", "FROM message m JOIN content_sort", "UPDATE message AS m SET flags",
                "DELETE FROM message WHERE account_id", "FROM message m JOIN folder g",
                "SELECT uid, content_id, size, flags, keywords, internaldate FROM message")
    for part in expected:
        assert any(part in _LEAF.sub("message", sql) for sql in statements), f"no statement with {part!r} was made"
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as conn:
        [(partition,)] = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM message WHERE account_id = %s",
                                      (account,)).fetchall()
        # the hot statements of the mix name the account's partition itself (store/leaves.py):
        # a generic plan on ``message`` locks every partition before it prunes them
        for part in ("SELECT uid, flags, keywords FROM {t} WHERE account_id", "LEFT JOIN {t} m ON m.account_id",
                     "FROM {t} AS message", "UPDATE {t} AS m SET flags", "DELETE FROM {t} WHERE account_id",
                     "FROM {t} m JOIN folder g", "INSERT INTO {t} ("):
            assert any(part.format(t=partition) in sql for sql in statements), f"no statement with {part!r} on {partition}"
        for sql, params in statements.items():
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())
            read = set(re.findall(r"\bmessage_p\d\d\b", plan))
            assert read == {partition}, f"{sql}\n{plan}"


def test_a_prepared_statement_on_message_runs_a_generic_plan_that_reads_one_partition(pg_city):
    """The store's connections plan prepared statements generically (db.PLAN_CACHE_MODE):
    PostgreSQL's own choice planned a statement on the partitioned table afresh at every run.
    The generic plan still reads one partition: it is pruned when it starts, by the account."""
    store, accounts = pg_city
    deliver(store, b"Subject: one\r\n\r\nx\r\n", accounts[:1])
    account, inbox = accounts[0], mb.find_folder(store, accounts[0], "INBOX").id
    sql = "SELECT uid, flags, keywords FROM message WHERE account_id = :a AND folder_id = :f ORDER BY uid"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_generic_plan"
        for _ in range(7):  # psycopg prepares it on the server after its fifth run
            assert conn.execute(text(sql), {"a": account, "f": inbox}).all() == [(1, 0, None)]
        [(name, generic, custom)] = conn.exec_driver_sql(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'SELECT uid, flags, keywords FROM message%%'").all()
        assert generic >= 1 and custom == 0
        plan = "\n".join(r for (r,) in conn.exec_driver_sql(f"EXPLAIN EXECUTE {name}({account}, {inbox})"))
        [(partition,)] = conn.exec_driver_sql(f"SELECT DISTINCT tableoid::regclass::text FROM message "
                                              f"WHERE account_id = {account}").all()
    assert set(re.findall(r"\bmessage_p\d\d\b", plan)) == {partition}, plan


def test_the_partition_found_without_the_database_is_the_one_postgresql_puts_the_account_in(pg_city, tmp_path):
    """store/leaves.py works out PostgreSQL's hash of a bigint account id with its partitioning
    seed: it must name the partition PostgreSQL's own bound check takes, for every id (large,
    negative, at the edges), or a routed statement reads an empty partition."""
    import random

    store, accounts = pg_city
    assert store.message_partitions == PARTITIONS
    with store.engine.connect() as conn:  # a statement's text per partition: more kept prepared (store.prepared_statements)
        assert conn.connection.driver_connection.prepared_max == 400
    ids = list(range(-50, 3000)) + [random.Random(13).randrange(-2 ** 63, 2 ** 63) for _ in range(3000)]
    ids += [2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1, -2 ** 63, -2 ** 31]
    [(wrong,)] = _rows(store, "SELECT count(*) FROM unnest(CAST(:ids AS bigint[]), CAST(:rs AS int[])) AS v(a, r) "
                              "WHERE NOT satisfies_hash_partition('message'::regclass, :n, v.r, v.a)",
                       ids=ids, rs=[partition_of(a, PARTITIONS) for a in ids], n=PARTITIONS)
    assert wrong == 0
    deliver(store, b"Subject: one\r\n\r\nx\r\n", accounts)
    for account in accounts:
        [(partition,)] = _rows(store, "SELECT DISTINCT tableoid::regclass::text FROM message WHERE account_id = :a",
                               a=account)
        assert store.message_table(account) == partition
    sqlite = open_store(make_config(tmp_path / "lite"))
    try:
        assert sqlite.message_partitions == 0 and sqlite.message_table(accounts[0]) == "message"
    finally:
        sqlite.dispose()

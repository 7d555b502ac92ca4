"""PostgreSQL: a write transaction tells the other nodes of everything it changed in ONE
``pg_notify`` sent just before its COMMIT (issue 13, section 4), not one per write inside it.

The observer is what another node runs: a connection LISTENing on the channel. An IMAP DELETE
changes a folder and the account's folder list in one transaction (two announcements, which were
two notifications); a rolled-back write tells nothing."""
from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from mailserver.store.mailstore import deliver
from mailserver.store.notify import CHANNEL, parse_payload
from tests.conftest import make_config

from .conftest import start_server


def _listener(pg_url: str) -> psycopg.Connection:
    url = make_url(pg_url)
    conn = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def _heard(conn: psycopg.Connection, quiet: float = 1.0) -> list[str]:
    """The payloads that arrive until none has for ``quiet`` seconds."""
    out: list[str] = []
    while True:
        got = [n.payload for n in conn.notifies(timeout=quiet, stop_after=1)]
        if not got:
            return out
        out += got


def test_one_notification_per_transaction_with_every_id(pg_url, tmp_path):
    from mailserver.provision import prepare

    cfg = make_config(tmp_path / "pg", store_url=pg_url)
    prepare(cfg)
    server = start_server(cfg)
    account = server.users[0][1]
    listen = _listener(pg_url)
    try:
        c = server.client()
        try:
            assert c.create("Reports")[0] == "OK"
            created = _heard(listen)
            assert created == [f"a{account}"]
            assert c.delete("Reports")[0] == "OK"
            deleted = _heard(listen)
            # one notification: the folder and the account's list together
            assert len(deleted) == 1, deleted
            folders, accounts = parse_payload(deleted[0])
            assert accounts == [account] and len(folders) == 1
        finally:
            c.logout()
        # a delivery to both citizens in one transaction: one notification, both INBOXes
        deliver(server.ctx.store, b"Subject: both\r\n\r\nhi\r\n", [u[1] for u in server.users])
        both = _heard(listen)
        assert len(both) == 1 and len(parse_payload(both[0])[0]) == 2, both
        # a transaction that announced and rolled back tells nothing
        from mailserver.store.notify import announce

        with server.ctx.store.sessions() as s:
            with s.begin():
                announce(s, [123456])
                s.rollback()
        assert _heard(listen, quiet=0.5) == []
    finally:
        listen.close()
        server._stop()

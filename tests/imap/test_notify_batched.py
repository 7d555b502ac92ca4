"""PostgreSQL: a write transaction tells the other nodes of everything it changed just before its
COMMIT (issue 13, section 4), one ``pg_notify`` per channel it touched (a folder's channel
``civicmail_f<id mod 1024>``, an account's ``civicmail_a<id mod 1024>``), not one per write.

The observer is a connection LISTENing on every channel (a node LISTENs only to those its
sessions need: test_notify_channels.py). An IMAP DELETE changes a folder and the account's folder
list in one transaction: one notification on each of the two channels; a delivery to two INBOXes
one on each INBOX's channel; a rolled-back write tells nothing."""
from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from mailserver.store.mailstore import deliver
from mailserver.store.notify import CHANNELS, account_channel, folder_channel, parse_payload
from tests.conftest import make_config

from .conftest import start_server


def _listener(pg_url: str) -> psycopg.Connection:
    url = make_url(pg_url)
    conn = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True)
    for n in range(CHANNELS):
        conn.execute(f"LISTEN {folder_channel(n)}; LISTEN {account_channel(n)}")
    return conn


def _heard(conn: psycopg.Connection, quiet: float = 1.0) -> list[tuple[str, str]]:
    """The (channel, payload) that arrive until none has for ``quiet`` seconds."""
    out: list[tuple[str, str]] = []
    while True:
        got = [(n.channel, n.payload) for n in conn.notifies(timeout=quiet, stop_after=1)]
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
            assert created == [(account_channel(account), f"a{account}")]
            assert c.delete("Reports")[0] == "OK"
            deleted = sorted(_heard(listen))
            # two notifications, sent together: the account's list on its channel, the folder on its own
            assert len(deleted) == 2, deleted
            assert deleted[0] == (account_channel(account), f"a{account}")  # civicmail_a sorts first
            (folder,), accounts = parse_payload(deleted[1][1])
            assert accounts == [] and deleted[1][0] == folder_channel(folder)
        finally:
            c.logout()
        # a delivery to both citizens in one transaction: one notification on each INBOX's channel
        deliver(server.ctx.store, b"Subject: both\r\n\r\nhi\r\n", [u[1] for u in server.users])
        both = _heard(listen)
        inboxes = [parse_payload(payload)[0] for _, payload in both]
        assert len(both) == 2 and all(len(ids) == 1 for ids in inboxes), both
        assert {channel for channel, _ in both} == {folder_channel(ids[0]) for ids in inboxes}
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

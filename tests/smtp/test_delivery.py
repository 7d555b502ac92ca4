"""Group commit under concurrency, and storage failures answered 451 with nothing half-written."""
from __future__ import annotations

import asyncio
import smtplib
import sqlite3

import aiosmtplib
import pytest

from .conftest import message


def concurrent_senders(server, senders: int, per_sender: int) -> None:
    p = server.people

    async def sender(n: int) -> list[str]:
        accepted = []
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("smtp"), start_tls=False)
        async with client:
            for i in range(per_sender):
                subject = f"c{n}-m{i}"
                errors, _ = await client.sendmail("someone@example.org", [p.alice, p.bob],
                                                  message("someone@example.org", p.alice, subject))
                assert errors == {}
                accepted.append(subject)
        return accepted

    async def run_all():
        return await asyncio.gather(*(sender(n) for n in range(senders)))

    accepted = [s for batch in asyncio.run(run_all()) for s in batch]
    assert len(accepted) == senders * per_sender
    for address in (p.alice, p.bob):
        ids = [m.split(b"Message-ID: <", 1)[1].split(b"@test>", 1)[0].decode() for m in server.inbox(address)]
        assert sorted(ids) == sorted(accepted)  # every one, exactly once
    committer = next(s for s in server.services if s.name == "smtp group commit").shared.committer
    assert committer.commits < committer.messages  # sessions shared commits


def test_fifty_concurrent_senders_store_every_accepted_message_once(server):
    concurrent_senders(server, senders=50, per_sender=6)


@pytest.mark.postgres
def test_group_commit_on_postgresql(server_factory, pg_url):
    concurrent_senders(server_factory(store_url=pg_url), senders=20, per_sender=5)


def test_storage_failure_answers_451_and_writes_nothing(server_factory):
    server = server_factory("store.busy_timeout=0.2")
    alice = server.people.alice
    db = server.config.data_dir / "civicmail.sqlite3"
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.ehlo("x")
        c.mail("someone@example.org")
        c.rcpt(alice)  # looked up (and cached) before the lock is taken
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock too long
        try:
            code, reply = c.data(message("someone@example.org", alice, "while locked"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (code, reply) == (451, b"4.3.0 Mail store unavailable, try again later")
        assert server.inbox(alice) == []
        # the same session retries and succeeds once the lock is free
        c.mail("someone@example.org")
        c.rcpt(alice)
        assert c.data(message("someone@example.org", alice, "after the lock"))[0] == 250
    [stored] = server.inbox(alice)
    assert b"after the lock" in stored


def test_over_quota_is_refused_552(server_factory):
    server = server_factory("accounts.quota_bytes=3000")
    alice = server.people.alice
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.ehlo("x")
        assert c.sendmail("someone@example.org", [alice], message("someone@example.org", alice, "fits")) == {}
        c.mail("someone@example.org")
        c.rcpt(alice)
        code, reply = c.data(message("someone@example.org", alice, "too much", body=("q" * 900 + "\r\n") * 3))
        assert (code, reply[:5]) == (552, b"5.2.2")
    assert len(server.inbox(alice)) == 1

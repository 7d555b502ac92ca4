"""The outbound queue against a real local relay (aiosmtpd): retry, DKIM, DSN, the CLI."""
from __future__ import annotations

import asyncio
import email
import threading
import time

import dkim
import pytest
from aiosmtpd.smtp import SMTP as RelaySMTP

from mailserver.cli import main as cli_main
from mailserver.identity.certs import dkim_dns_record
from mailserver.outbound.queue import list_entries

from .conftest import client_tls, message
from .test_submission import submit


class Relay:
    """A relay on its own loop: answers DATA with the queued replies, then 250."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.received: list[tuple[str, list[str], bytes]] = []
        self.attempts = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self):
        return await self.loop.create_server(lambda: RelaySMTP(self, hostname="relay.test", loop=self.loop),
                                             "127.0.0.1", 0)

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.replies:
            return self.replies.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 relayed"

    def close(self) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def relay_factory():
    relays = []

    def make(replies):
        relays.append(Relay(replies))
        return relays[-1]

    yield make
    for r in relays:
        r.close()


def wait_until(predicate, what: str, timeout: float = 60.0):
    """Wait for the server's runner (not a timing assert: the bound only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def send_remote(server, subject: str) -> bytes:
    p = server.people
    raw = message(p.alice, "friend@elsewhere.example", subject)
    with submit(server, p.alice) as c:
        assert c.sendmail(p.alice, ["friend@elsewhere.example"], raw) == {}
    return raw


def test_retry_after_failure_then_delivered_with_valid_dkim(server_factory, relay_factory, capsys):
    relay = relay_factory(["451 4.3.0 busy, try later"])
    server = server_factory(f"outbound.relay=127.0.0.1:{relay.port}", "outbound.retry_base_seconds=3600")
    raw = send_remote(server, "to a friend")
    [entry] = wait_until(lambda: [e for e in list_entries(server.store) if e.attempts == 1 and e.state == "queued"],
                         "the first, failed attempt")
    assert "451 4.3.0" in entry.last_error and relay.received == []

    config_path = str(server.config.source)
    assert cli_main(["-c", config_path, "queue", "list"]) == 0
    assert "friend@elsewhere.example" in capsys.readouterr().out
    assert cli_main(["-c", config_path, "queue", "retry", str(entry.id)]) == 0
    server.loop.call_soon_threadsafe(server.outbound.wake)  # as the CLI would not: skip the poll wait
    wait_until(lambda: relay.received, "the relay to accept")
    wait_until(lambda: list_entries(server.store) == [], "the entry to leave the queue")

    [(sender, rcpts, signed)] = relay.received
    assert (sender, rcpts) == (server.people.alice, ["friend@elsewhere.example"])
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(raw)
    record = dkim_dns_record(server.config.data_path(server.config.dkim.key)).encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record
                       if name.startswith(b"civic1._domainkey.hz.example.cn") else None)
    assert not dkim.verify(signed.replace(b"to a friend", b"to a foe"),
                           dnsfunc=lambda name, timeout=5: record)


def test_last_failure_bounces_a_dsn_into_the_senders_inbox(server_factory, relay_factory):
    relay = relay_factory(["451 4.3.0 busy, try later"] * 10)
    server = server_factory(f"outbound.relay=127.0.0.1:{relay.port}", "outbound.retry_base_seconds=0",
                            "outbound.max_attempts=2")
    send_remote(server, "never arrives")
    [entry] = wait_until(lambda: [e for e in list_entries(server.store) if e.state == "bounced"], "the bounce")
    assert entry.attempts == 2 and relay.attempts == 2
    [dsn_raw] = server.inbox(server.people.alice)
    dsn = email.message_from_bytes(dsn_raw)
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in dsn.walk()]
    assert "message/delivery-status" in parts and "text/rfc822-headers" in parts
    assert b"Final-Recipient: rfc822; friend@elsewhere.example" in dsn_raw
    assert b"Action: failed" in dsn_raw and b"Status: 4.3.0" in dsn_raw
    assert b"Subject: never arrives" in dsn_raw  # the original header is attached

    assert cli_main(["-c", str(server.config.source), "queue", "delete", str(entry.id)]) == 0
    assert list_entries(server.store) == []
    assert cli_main(["-c", str(server.config.source), "queue", "delete", str(entry.id)]) == 1


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_permanent_refusal_bounces_at_once(server_factory, relay_factory, engine, request):
    relay = relay_factory(["550 5.1.1 no such user"])
    store_url = request.getfixturevalue("pg_url") if engine == "postgresql" else None
    server = server_factory(f"outbound.relay=127.0.0.1:{relay.port}", store_url=store_url)
    send_remote(server, "unknown friend")
    [dsn_raw] = wait_until(lambda: server.inbox(server.people.alice), "the bounce")
    assert b"Status: 5.1.1" in dsn_raw and relay.attempts == 1
    wait_until(lambda: list_entries(server.store) == [], "the entry to leave the queue")  # removed after the DSN


def test_queue_survives_a_restart(server_factory):
    server = server_factory()  # no relay: mail waits, spending no attempts
    send_remote(server, "waits")
    assert server.call(server.outbound.runner.run_once()) == 0
    server.stop()
    server.start()
    [entry] = list_entries(server.store)
    assert entry.recipients == ("friend@elsewhere.example",) and entry.state == "queued" and entry.attempts == 0

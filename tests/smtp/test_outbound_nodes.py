"""Two `civicmail serve` nodes on one PostgreSQL share the outbound queue through a relay that
is slow (each DATA answered after a few seconds, longer than the lease): the node attempting
entries renews their lease while its attempts run, so the other node, woken meanwhile, never
takes and resends them. The relay sees every message once (issue 13, section 3)."""
from __future__ import annotations

import asyncio
import re
import shutil
import signal
import smtplib
import time
from email.message import EmailMessage

from sqlalchemy import func, select

from mailserver.bench.smtp import start_server
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.store import open_store
from mailserver.store.models import OutboundMessage
from tests.conftest import make_config

from .conftest import PASSWORD, populate
from .test_outbound import Relay, wait_until

#: seconds the relay takes to answer DATA, and the entries' lease (renewed every third of it)
RELAY_SECONDS, LEASE_SECONDS = 4, 2


class SlowRelay(Relay):
    def __init__(self) -> None:
        self.started = 0
        super().__init__([])

    async def handle_DATA(self, server, session, envelope):
        self.started += 1
        await asyncio.sleep(RELAY_SECONDS)
        return await super().handle_DATA(server, session, envelope)


def submit(log: list[str], sender: str, subject: str) -> None:
    port = int(re.search(r"SMTP submission listening on [\d.]+:(\d+)", "".join(log)).group(1))
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "friend@example.org", subject
    msg.set_content("hello from the city")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.login(sender, PASSWORD)  # loopback, development: no TLS needed
        smtp.send_message(msg)


def test_a_slow_relay_never_lets_a_second_node_resend(pg_url, tmp_path):
    config = make_config(tmp_path / "a", store_url=pg_url)
    prepare(config)
    store = open_store(config)
    sender = populate(Registry(config, store)).alice
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    relay = SlowRelay()
    sets = (f"store.url={pg_url}", f"outbound.relay=127.0.0.1:{relay.port}", f"outbound.lease_seconds={LEASE_SECONDS}")
    nodes = [start_server(tmp_path / name / "civicmail.toml", sets) for name in ("a", "b")]
    try:
        for n in range(3):  # node a is woken by its own submissions and claims them
            submit(nodes[0][3], sender, f"first node {n}")
        wait_until(lambda: relay.started >= 1, "the first attempt")
        time.sleep(LEASE_SECONDS + 1)  # the claim's own lease has passed: only renewals keep it
        submit(nodes[1][3], sender, "second node")  # wakes node b, which claims what is due
        wait_until(lambda: len(relay.received) >= 4, "four messages relayed", timeout=120)

        def queue_empty():
            with store.reader() as s:
                return s.scalar(select(func.count(OutboundMessage.id))) == 0

        wait_until(queue_empty, "the queue to empty", timeout=120)
        time.sleep(RELAY_SECONDS + 1)  # an attempt begun meanwhile would have ended by now
    finally:
        for proc, *_ in nodes:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc, *_ in nodes]
        relay.close()
        store.dispose()
    assert codes == [0, 0]
    subjects = sorted(re.search(rb"^Subject: (.*?)\r?$", raw, re.M).group(1).decode() for _, _, raw in relay.received)
    assert subjects == ["first node 0", "first node 1", "first node 2", "second node"]
    assert relay.started == 4
    assert "Traceback" not in "".join(nodes[0][3] + nodes[1][3])

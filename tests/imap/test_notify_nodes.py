"""Two real `civicmail serve` nodes on one PostgreSQL (issue 13, section 4): a node hears only the
change notifications of the folders its own sessions watch.

Node A has a session in IDLE on citizen 1's INBOX, node B one on citizen 2's. Mail for each goes
in through the other node's SMTP listener (so only a notification can tell the session). Each
IDLE session is told (EXISTS), and each node's ``civicmail_store_notifications_received_total``
(its /metrics) moved by the notifications of its own session's folder alone: node A did not
receive the three commits to citizen 2's INBOX, nor B the one to citizen 1's, which every node
used to receive."""
from __future__ import annotations

import datetime as dt
import re
import shutil
import signal
import smtplib
import urllib.request

from sqlalchemy import select

from mailserver.bench.smtp import start_server
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from mailserver.store import open_store
from mailserver.store.models import Account, Folder
from mailserver.store.notify import folder_channel
from tests.imap.conftest import PASSWORD, Raw
from tests.serverkit import prepared_city

RECEIVED = "civicmail_store_notifications_received_total"
CHANNELS = "civicmail_store_notify_channels"


def _port(log: list[str], what: str) -> int:
    return int(re.search(rf"{what} listening on [\d.]+:(\d+)", "".join(log)).group(1))


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def _idle(port: int, address: str) -> Raw:
    raw = Raw(port)
    assert raw.command("l", f'LOGIN "{address}" "{PASSWORD}"')[-1].startswith(b"l OK")
    assert b"* 0 EXISTS\r\n" in raw.command("s", "SELECT INBOX")
    raw.send(b"i IDLE\r\n")
    assert raw.line().startswith(b"+ ")
    return raw


def _told(raw: Raw, exists: int) -> None:
    """Read the IDLE session's lines until it says EXISTS ``exists`` (its socket's 30 s timeout
    bounds the wait)."""
    while True:
        line = raw.line()
        assert line, "the server closed"
        if line.endswith(b" EXISTS\r\n") and int(line.split()[1]) >= exists:
            return


def test_each_node_hears_only_the_folders_its_sessions_watch(pg_url, tmp_path):
    config, users = prepared_city(tmp_path / "a", (), lambda reg: [add_citizen(
        reg, name, idnumber.make("330106", dt.date(1980, 1, day), 7), password=PASSWORD).address
        for day, name in ((2, "张伟"), (3, "李娜"))], store_url=pg_url)
    store = open_store(config)
    try:
        with store.reader() as s:
            inboxes = [s.scalar(select(Folder.id).join(Account, Account.id == Folder.account_id)
                                .where(Account.address == u, Folder.name == "INBOX")) for u in users]
    finally:
        store.dispose()
    assert folder_channel(inboxes[0]) != folder_channel(inboxes[1])
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the second node: same keys and certificates
    sets = (f"store.url={pg_url}", "imaps.listen=")
    nodes = [start_server(tmp_path / name / "civicmail.toml", sets) for name in ("a", "b")]
    sessions: list[Raw] = []
    try:
        (_, host_a, smtp_a, log_a), (_, host_b, smtp_b, log_b) = nodes
        metrics = [_port(log, "Prometheus metrics") for log in (log_a, log_b)]
        sessions = [_idle(_port(log_a, "imap"), users[0]), _idle(_port(log_b, "imap"), users[1])]
        before = [_metric(port, RECEIVED) for port in metrics]
        assert all(_metric(port, CHANNELS) >= 1 for port in metrics)  # at least its IDLE session's channel

        with smtplib.SMTP(host_a, smtp_a, timeout=30) as smtp:
            for n in range(1, 4):
                smtp.sendmail("someone@elsewhere.example", [users[1]], f"Subject: to B's session {n}\r\n\r\nhi\r\n")
        _told(sessions[1], 3)  # through node A, told on node B
        with smtplib.SMTP(host_b, smtp_b, timeout=30) as smtp:
            smtp.sendmail("someone@elsewhere.example", [users[0]], "Subject: to A's session\r\n\r\nhi\r\n")
        _told(sessions[0], 1)
        # node A received the one commit to its session's folder (counted before the wake-up);
        # the three before it (committed earlier, so received earlier had A listened) never came
        assert _metric(metrics[0], RECEIVED) - before[0] == 1
        # node B: one notification a commit to its session's folder, none for A's
        assert 1 <= _metric(metrics[1], RECEIVED) - before[1] <= 3
        for raw in sessions:
            raw.send(b"DONE\r\n")
            assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    finally:
        for raw in sessions:
            raw.close()
        for proc, *_ in nodes:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc, *_ in nodes]
    assert codes == [0, 0]
    assert "Traceback" not in "".join(nodes[0][3] + nodes[1][3])

"""Issue 16, item 9: Prometheus metrics at /metrics on a loopback listener of their own. A scrape
after SMTP, IMAP and a drop finds their counters moved; a token, when set, is required."""
from __future__ import annotations

import datetime as dt
import http.client
import imaplib
import json
import os
import re
import smtplib
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailserver.config import REPO_ROOT
from mailserver.identity import idnumber
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency, grant
from mailserver.registry.citizens import add_citizen
from tests.abuse import ALL_PORTS_ZERO, PASSWORD
from tests.serverkit import LoopServer, prepared_city

METRICS = "Prometheus metrics"
LICENCE = REPO_ROOT / "templates" / "licence-renewal" / "sample.csv"
#: the one person of the licence-renewal sample registered here (the sample's other rows go to paper)
CHEN = ("陈建国", "330102196804120318")

Sample = dict[tuple[str, frozenset], float]


def _populate(reg: Registry) -> list[str]:
    add_agency(reg, "traffic-police", "交警支队", ["traffic-police"], "agency-password-1")
    grant(reg, "traffic-police", ["licence-renewal"])
    add_citizen(reg, *CHEN, password=PASSWORD)
    return [add_citizen(reg, name, idnumber.make("330106", dt.date(1981, 2, n + 1), 300 + n), password=PASSWORD).address
            for n, name in enumerate(("李强", "陈静"))]


@pytest.fixture
def make_server(tmp_path):
    running: list[LoopServer] = []

    def make(*overrides: str) -> tuple[LoopServer, list[str]]:
        config, addresses = prepared_city(tmp_path / f"city{len(running)}", ALL_PORTS_ZERO + overrides, _populate)
        server = LoopServer(config).start()
        running.append(server)
        return server, addresses

    yield make
    for server in running:
        server.stop()


def get(port: int, path: str = "/metrics", headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def scrape(server: LoopServer) -> Sample:
    status, headers, body = get(server.port(METRICS))
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=")  # the text format
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(sample: Sample, name: str, **labels: str) -> float:
    return sample.get((name, frozenset(labels.items())), 0.0)


def moved(before: Sample, after: Sample, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_scrape_after_smtp_imap_and_a_drop_finds_the_counters_moved(make_server):
    server, addresses = make_server()
    alice, bob = addresses
    assert server.services and server.port(METRICS)
    listener = next(s for s in server.services if getattr(s, "name", "") == METRICS)
    assert listener.address[0] == "127.0.0.1"
    before = scrape(server)
    assert value(before, "civicmail_store_up") == 1
    assert value(before, "civicmail_drops", state="done", source="cli") == 0

    # SMTP: one message stored, one recipient refused, one AUTH refused on submission
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("someone@example.org")[0] == 250
        assert c.rcpt("nobody@hz.example.cn")[0] == 550
        c.rset()
        c.sendmail("someone@example.org", [alice], b"From: someone@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth("PLAIN", lambda challenge=None: f"\0{bob}\0wrong password")  # one attempt (login() tries two)

    # IMAP: a wrong password, then a session that reads the message
    c = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        c.login(alice, "wrong password")
    c.login(alice, PASSWORD)
    assert c.select("INBOX") == ("OK", [b"1"])
    assert c.uid("FETCH", "1", "(FLAGS)")[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        c.xatom("XFROBNICATE")
    c.logout()

    # a drop, run by the operator's CLI in a process of its own: the server counts it from the store
    run = subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(server.config.source), "drop", "run",
                          str(LICENCE), "--agency", "traffic-police", "--notice-type", "licence-renewal"],
                         capture_output=True, text=True, timeout=120, env=os.environ)
    assert run.returncode == 0, run.stderr

    after = scrape(server)
    smtp = {"listener": "smtp"}
    assert moved(before, after, "civicmail_messages_total", **smtp, outcome="accepted", reason="stored") == 1
    assert moved(before, after, "civicmail_messages_total", **smtp, outcome="refused", reason="unknown user") == 1
    assert moved(before, after, "civicmail_smtp_commands_total", **smtp, command="DATA") == 1
    assert moved(before, after, "civicmail_smtp_replies_total", **smtp, command="RCPT", code="550") == 1
    assert moved(before, after, "civicmail_smtp_replies_total", **smtp, command="DATA", code="250") == 1
    assert moved(before, after, "civicmail_delivery_seconds_count", path="smtp") == 1
    assert moved(before, after, "civicmail_store_commit_seconds_count", writer="smtp") >= 1
    assert moved(before, after, "civicmail_logins_total", listener="submission", outcome="failed") == 1
    assert moved(before, after, "civicmail_logins_total", listener="imap", outcome="failed") == 1
    assert moved(before, after, "civicmail_logins_total", listener="imap", outcome="ok") == 1
    assert moved(before, after, "civicmail_imap_commands_total", command="LOGIN", status="NO") == 1
    assert moved(before, after, "civicmail_imap_commands_total", command="LOGIN", status="OK") == 1
    assert moved(before, after, "civicmail_imap_commands_total", command="SELECT", status="OK") == 1
    assert moved(before, after, "civicmail_imap_commands_total", command="UID FETCH", status="OK") == 1
    assert moved(before, after, "civicmail_imap_commands_total", command="(invalid)", status="BAD") == 1
    for name in ("smtp", "submission", "imap"):
        assert moved(before, after, "civicmail_connections_total", listener=name) >= 1, name
    assert moved(before, after, "civicmail_connections_total", listener="metrics") == 1  # the first scrape
    assert value(after, "civicmail_connections_open", listener="metrics") == 1  # this one
    assert moved(before, after, "civicmail_http_requests_total", listener="metrics", route="/metrics",
                 status="200") == 1
    assert value(after, "civicmail_drops", state="done", source="cli") == 1
    assert value(after, "civicmail_drop_rows", outcome="delivered") == 1  # 陈建国
    assert value(after, "civicmail_drop_rows", outcome="unmatched") == 2  # the others: paper mail
    assert value(after, "civicmail_outbound_queue_messages", state="queued") == 0
    assert value(after, "civicmail_outbound_queue_oldest_seconds", state="queued") == 0


def test_messages_deferred_by_reason_and_login_throttles_are_counted(make_server):
    """An agency over its submission rate is deferred (450) with its reason; an account guessed
    at is throttled: both series move, labelled, in a scrape."""
    server, addresses = make_server("submission.agency_rate_per_minute=1", "login.max_failures_per_account=2")
    alice, bob = addresses
    sender = "traffic-police@hz.example.cn"
    before = scrape(server)
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("client.test")
        c.login("traffic-police", "agency-password-1")
        c.sendmail(sender, [alice], f"From: {sender}\r\nTo: {alice}\r\nSubject: one\r\n\r\nfirst\r\n".encode())
        code, reply = c.mail(sender)
        assert (code, reply[:5]) == (450, b"4.7.1")
    c = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        for _ in range(2):
            with pytest.raises(imaplib.IMAP4.error):
                c.login(bob, "a guess")
        with pytest.raises(imaplib.IMAP4.error):  # the right password, but the account is throttled now
            c.login(bob, PASSWORD)
    finally:
        c.shutdown()
    after = scrape(server)
    assert moved(before, after, "civicmail_messages_total", listener="submission", outcome="deferred",
                 reason="agency rate") == 1
    assert moved(before, after, "civicmail_messages_total", listener="submission", outcome="accepted",
                 reason="stored") == 1
    assert moved(before, after, "civicmail_logins_total", listener="imap", outcome="failed") == 2
    assert moved(before, after, "civicmail_logins_total", listener="imap", outcome="throttled") == 1
    assert moved(before, after, "civicmail_logins_total", listener="imap", outcome="ok") == 0


def _cli(server: LoopServer, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(server.config.source), *args],
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr
    return done


def test_drop_rows_are_counted_by_outcome_and_a_retried_row_moves(make_server, tmp_path):
    """A drop with a row of each kind the pipeline tells apart, run by the CLI: the scrape splits
    its rows by outcome; a retry after a citizen registers moves a row from unmatched to
    delivered, and a second drop adds to the figures."""
    server, _ = make_server()
    lines = LICENCE.read_text(encoding="utf-8").splitlines()
    header, chen, lin = lines[0], lines[1], lines[2]
    drop = tmp_path / "mixed.csv"
    drop.write_text("\n".join([header, chen, chen,  # the second: a duplicate of the first
                               lin, lines[3],  # nobody registered: paper mail
                               "JJ-LR-2026-000190,330102196804120319,错号,1,2027-01-01,x"]) + "\n",  # invalid
                    encoding="utf-8")
    _cli(server, "drop", "run", str(drop), "--agency", "traffic-police", "--notice-type", "licence-renewal")
    first = scrape(server)
    counted = {outcome: value(first, "civicmail_drop_rows", outcome=outcome)
               for outcome in ("delivered", "invalid", "unmatched", "held", "opted-out", "duplicate", "failed")}
    assert counted == {"delivered": 1, "invalid": 1, "unmatched": 2, "held": 0, "opted-out": 0, "duplicate": 1,
                       "failed": 0}, counted
    assert not any(key[0] == "civicmail_drop_rows" and dict(key[1]).get("outcome") == "rejected" for key in first)

    reference, number, name = lin.split(",")[:3]
    _cli(server, "citizen", "add", "--name", name, "--id-number", number)
    _cli(server, "drop", "retry", "1")
    _cli(server, "drop", "run", str(LICENCE), "--agency", "traffic-police", "--notice-type", "licence-renewal")
    after = scrape(server)
    # the retry: 林小红 delivered; the second drop: 陈建国 again (a duplicate), 林小红 again (a
    # duplicate now), 欧阳明辉 still unmatched
    assert value(after, "civicmail_drop_rows", outcome="delivered") == 2
    assert value(after, "civicmail_drop_rows", outcome="unmatched") == 2
    assert value(after, "civicmail_drop_rows", outcome="duplicate") == 3
    assert value(after, "civicmail_drop_rows", outcome="invalid") == 1
    assert value(after, "civicmail_drops", state="done", source="cli") == 2


def test_the_outbound_queue_length_and_age_come_from_the_store(make_server):
    """A citizen's mail to another domain waits (no relay): the queue shows it, and its age."""
    server, addresses = make_server()
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("client.test")
        c.login(addresses[0], PASSWORD)
        c.sendmail(addresses[0], ["friend@example.org"],
                   f"From: {addresses[0]}\r\nTo: friend@example.org\r\nSubject: hi\r\n\r\nhello\r\n".encode())
    sample = scrape(server)
    assert value(sample, "civicmail_outbound_queue_messages", state="queued") == 1
    assert value(sample, "civicmail_outbound_queue_oldest_seconds", state="queued") > 0
    assert value(sample, "civicmail_messages_total", listener="submission", outcome="accepted", reason="queued") == 1


def test_a_token_when_set_is_required(make_server):
    server, _ = make_server("http.metrics_token=s3cret-token")
    port = server.port(METRICS)
    status, headers, _ = get(port)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert get(port, headers={"Authorization": "Bearer wrong-token"})[0] == 401
    status, _, body = get(port, headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and b"civicmail_connections_total" in body
    assert get(port, "/elsewhere", headers={"Authorization": "Bearer s3cret-token"})[0] == 404

    # every series the shipped Grafana dashboard queries is one the server exposes
    exposed = set()
    for family in text_string_to_metric_families(body.decode()):
        exposed |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((REPO_ROOT / "config" / "grafana-civicmail.json").read_text(encoding="utf-8"))
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"civicmail_[a-z_]+", target["expr"])}
    assert len(dashboard["panels"]) >= 12 and len(queried) >= 15
    assert queried <= exposed, queried - exposed


def test_metrics_can_be_switched_off_and_default_to_loopback():
    from mailserver import config as config_mod

    defaults = config_mod.build({})
    assert defaults.http.metrics and defaults.http.metrics_listen.startswith("127.0.0.1:")
    assert defaults.http.metrics_token == ""
    off = config_mod.build({}, ("http.metrics=false", "http.metrics_listen="))
    from mailserver.web.service import make_services

    class Ctx:
        config = off

    assert [s.name for s in make_services(Ctx())] == ["citizen services HTTP"]
    with pytest.raises(config_mod.ConfigError, match="http.metrics_listen"):
        config_mod.build({}, ("http.metrics_listen=",))

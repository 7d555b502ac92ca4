"""A running SMTP server (the real services on a loop in a thread, real sockets on ephemeral
ports) over a prepared SQLite data directory with two citizens and two agencies."""
from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass

import pytest
from mailserver.identity import idnumber
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency, grant
from mailserver.registry.citizens import add_citizen
from mailserver.smtp.service import make_services
from tests.serverkit import LoopServer, prepared_city

DOMAIN = "hz.example.cn"
PASSWORD = "correct horse battery"
PORT_ZERO = ("smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0", "submissions.listen=127.0.0.1:0",
             "imap.listen=", "imaps.listen=", "http.listen=127.0.0.1:0", "http.metrics_listen=127.0.0.1:0")


@dataclass
class People:
    alice: str = ""
    bob: str = ""
    traffic: str = "traffic-police"
    traffic_sender: str = f"traffic-police@{DOMAIN}"
    social: str = "social-security"
    social_sender: str = f"social-security@{DOMAIN}"


def populate(reg: Registry) -> People:
    p = People()
    p.alice = add_citizen(reg, "张伟", idnumber.make("330106", dt.date(1980, 1, 2), 101), password=PASSWORD).address
    p.bob = add_citizen(reg, "王芳", idnumber.make("330106", dt.date(1985, 3, 4), 102), password=PASSWORD).address
    add_agency(reg, p.traffic, "交警支队", [p.traffic_sender], PASSWORD)
    grant(reg, p.traffic, ["licence-renewal", "violation-points"])
    add_agency(reg, p.social, "社保局", [p.social_sender], PASSWORD)
    grant(reg, p.social, ["pension-statement"])
    return p


class RunningServer(LoopServer):
    """The SMTP listeners and the outbound queue, with the people ``populate`` made."""

    def __init__(self, config, people: People) -> None:
        super().__init__(config, make_services)
        self.people = people

    @property
    def outbound(self):
        return next(s for s in self.services if s.name == "outbound queue")


@pytest.fixture
def server_factory(tmp_path):
    running: list[RunningServer] = []

    def make(*overrides: str, store_url: str | None = None) -> RunningServer:
        config, people = prepared_city(tmp_path / f"data{len(running)}", PORT_ZERO + overrides, populate, store_url)
        server = RunningServer(config, people).start()
        running.append(server)
        return server

    yield make
    for server in running:
        server.stop()


@pytest.fixture
def server(server_factory) -> RunningServer:
    return server_factory()


def client_tls() -> ssl.SSLContext:
    """The test server's certificate is self-signed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(sender: str, to: str, subject: str = "hello", body: str = "body text", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n"
            f"{extra}\r\n{body}\r\n").encode("utf-8")

"""`civicmail serve` as it runs (every SERVICE_FACTORIES entry: SMTP, IMAP, citizen services) on
a loop in a thread, real sockets on ephemeral ports, over a prepared SQLite data directory."""
from __future__ import annotations

import datetime as dt
import imaplib
import smtplib
import time

import pytest
from sqlalchemy import func, select

from mailserver.identity import idnumber
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency
from mailserver.registry.citizens import add_citizen
from mailserver.services.service import ServicesWorker
from mailserver.store.models import ServiceProcessed
from tests.serverkit import LoopServer, prepared_city

DOMAIN = "hz.example.cn"
PASSWORD = "correct horse battery"
PORT_ZERO = ("smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0", "submissions.listen=127.0.0.1:0",
             "imap.listen=127.0.0.1:0", "imaps.listen=127.0.0.1:0", "http.listen=127.0.0.1:0",
             "http.metrics_listen=127.0.0.1:0")
NAMES = "张伟 王芳 李娜 刘洋 陈静 杨磊 赵敏 黄勇 周杰 吴婷".split()


def make_citizens(reg: Registry, n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        birth = dt.date(1960 + i % 40, 1 + i % 12, 1 + i % 28)
        out.append(add_citizen(reg, NAMES[i % len(NAMES)], idnumber.make("330106", birth, 100 + i),
                               password=PASSWORD).address)
    return out


class Server(LoopServer):
    """Every service of `civicmail serve`, with the citizens ``make_citizens`` made."""

    def __init__(self, config, citizens: list[str]) -> None:
        super().__init__(config)
        self.citizens = citizens

    @property
    def http_port(self) -> int:
        return self.port("citizen services HTTP")

    @property
    def worker(self) -> ServicesWorker:
        return next(s for s in self.services if isinstance(s, ServicesWorker))

    def settle(self) -> None:
        """Let the worker handle everything delivered so far (a round picks up new addresses too)."""
        self.call(self.worker.run_once())

    def send(self, login: str | None, sender: str, to: str, raw: bytes) -> None:
        """Over SMTP submission (authenticated) or inbound port 25 (login None: unauthenticated)."""
        port = self.port("submission") if login else self.port("smtp")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.ehlo("client.test")
            if login:
                c.login(login, PASSWORD)
            c.sendmail(sender, [to], raw)

    def imap(self, address: str) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port("imap"), timeout=30)
        c.login(address, PASSWORD)
        return c

    def processed(self) -> dict[str, int]:
        with self.store.reader() as s:
            return dict(s.execute(select(ServiceProcessed.outcome, func.count()).group_by(ServiceProcessed.outcome)).all())

    def wait_processed(self, total: int, timeout: float = 60) -> dict[str, int]:
        """Wait until the worker (woken by SMTP's commit) has handled ``total`` messages."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.processed()
            if sum(done.values()) >= total or time.monotonic() > deadline:
                return done
            time.sleep(0.05)


@pytest.fixture
def server_factory(tmp_path):
    running: list[Server] = []

    def make(citizens: int = 3, *overrides: str) -> Server:
        def populate(reg: Registry) -> list[str]:
            addresses = make_citizens(reg, citizens)
            add_agency(reg, "traffic-police", "交警支队", [f"traffic-police@{DOMAIN}"], PASSWORD)
            return addresses

        config, addresses = prepared_city(tmp_path / f"data{len(running)}", PORT_ZERO + overrides, populate)
        server = Server(config, addresses).start()
        running.append(server)
        return server

    yield make
    for server in running:
        server.stop()


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


def mail(sender: str, to: str, subject: str, body: str, msgid: str | None = None, extra: str = "") -> bytes:
    from email.header import Header

    subj = Header(subject, "utf-8").encode(linesep="\r\n") if not subject.isascii() else subject
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subj}", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if msgid:
        lines.append(f"Message-ID: {msgid}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode("utf-8")

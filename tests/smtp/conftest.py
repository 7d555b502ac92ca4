"""A running SMTP server (the real services on a loop in a thread, real sockets on ephemeral
ports) over a prepared SQLite data directory with two citizens and two agencies."""
from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from mailserver.cli.init import prepare
from mailserver.identity import idnumber
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency, grant
from mailserver.registry.citizens import add_citizen
from mailserver.server import ServerContext
from mailserver.smtp.service import make_services
from mailserver.store import open_store
from mailserver.store.models import Account, Content, Folder, Message
from tests.conftest import make_config

DOMAIN = "hz.example.cn"
PASSWORD = "correct horse battery"
PORT_ZERO = ("smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0", "submissions.listen=127.0.0.1:0",
             "imap.listen=", "imaps.listen=")


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


@dataclass
class RunningServer:
    config: object
    people: People
    ctx: ServerContext = None
    services: list = field(default_factory=list)
    loop: asyncio.AbstractEventLoop = None
    thread: threading.Thread = None

    def start(self) -> "RunningServer":
        store = open_store(self.config)
        self.ctx = ServerContext(self.config, store, Registry(self.config, store))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.services = make_services(self.ctx)
        for s in self.services:
            await s.start()

    async def _stop(self) -> None:
        for s in reversed(self.services):
            await s.stop()

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            self.ctx.executor.shutdown(wait=True)
            self.ctx.store.dispose()

    def port(self, kind: str) -> int:
        return next(s.address[1] for s in self.services if getattr(s, "kind", None) == kind)

    @property
    def outbound(self):
        return next(s for s in self.services if s.name == "outbound queue")

    @property
    def store(self):
        return self.ctx.store

    def inbox(self, address: str) -> list[bytes]:
        """Raw bytes of the messages in an account's INBOX, in UID order."""
        with self.store.reader() as s:
            return list(s.scalars(
                select(Content.raw).join(Message, Message.content_id == Content.id)
                .join(Folder, Folder.id == Message.folder_id).join(Account, Account.id == Folder.account_id)
                .where(Account.address == address, Folder.name == "INBOX").order_by(Message.uid)))


@pytest.fixture
def server_factory(tmp_path):
    running: list[RunningServer] = []

    def make(*overrides: str, store_url: str | None = None) -> RunningServer:
        config = make_config(tmp_path / f"data{len(running)}", *PORT_ZERO, *overrides, store_url=store_url)
        prepare(config)
        store = open_store(config)
        try:
            people = populate(Registry(config, store))
        finally:
            store.dispose()
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

"""When the database stops answering (issue 11, items 18 and 21): every client is answered "try
again later" before its own timeout, a message answered 4xx is never stored afterwards, IDLE ends
with BYE, and the log holds one traceback per outage.

PostgreSQL is frozen the way a network blackhole or a SIGSTOPped server looks: a TCP proxy between
civicmail and the shared server stops forwarding and keeps every socket open (the shared server
itself is never touched). SQLite's outage is another writer holding the lock.
"""
from __future__ import annotations

import imaplib
import logging
import smtplib
import socket
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailserver.store import Store
from mailserver.store.outage import OutageLog, is_outage

from tests.abuse import PASSWORD, assert_responsive, city_factory, smtp_greeting_seconds  # noqa: F401

#: the deadlines of these tests (store.lookup_timeout, store.commit_timeout)
LOOKUP, COMMIT = 1.5, 3.0
DEADLINES = (f"store.lookup_timeout={LOOKUP}", f"store.commit_timeout={COMMIT}", "store.connect_timeout=2")


class Blackhole:
    """A TCP proxy to ``upstream`` that can stop forwarding (``freeze``) without closing anything."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()  # frozen: what arrives is held, nothing goes through
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.thaw()
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxied_pg(pg_url):
    url = make_url(pg_url)
    proxy = Blackhole((url.host, url.port))
    yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def _message(subject: str, to: str) -> bytes:
    return (f"From: someone@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.org>\r\n\r\nbody\r\n").encode()


class IdleClient:
    """A raw IMAP client logged in, INBOX selected, in IDLE."""

    def __init__(self, port: int, user: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.f = self.sock.makefile("rb")
        self.f.readline()
        for line in (f'a LOGIN "{user}" "{PASSWORD}"', "b SELECT INBOX", "c IDLE"):
            self.sock.sendall(line.encode() + b"\r\n")
            reply = self.read_until((line[0] + " ").encode(), b"+ ")
            assert b" NO " not in reply and b" BAD " not in reply, reply

    def read_until(self, *prefixes: bytes) -> bytes:
        while True:
            line = self.f.readline()
            if not line or line.startswith(prefixes):
                return line


def test_a_frozen_postgresql_is_answered_in_time_and_nothing_is_stored_late(city_factory, proxied_pg,  # noqa: F811
                                                                              caplog):
    proxy, url = proxied_pg
    city = city_factory(*DEADLINES, store_url=url)
    abuser, bystander, third = city.addresses
    idle = IdleClient(city.imap_port, bystander)
    sender = smtplib.SMTP("127.0.0.1", city.smtp_port, timeout=15)
    sender.ehlo("x")
    sender.mail("someone@example.org")
    assert sender.rcpt(abuser)[0] == 250  # looked up (and cached) before the freeze
    caplog.set_level(logging.WARNING, logger="civicmail")
    proxy.freeze()
    try:
        in_flight: dict = {}

        def send_data():
            start = time.monotonic()
            in_flight["reply"] = sender.data(_message("in-flight", abuser))
            in_flight["seconds"] = time.monotonic() - start

        data = threading.Thread(target=send_data)
        data.start()

        # a new client, a recipient not looked up yet: 451 4.3.0 at RCPT within the deadline
        start = time.monotonic()
        with smtplib.SMTP("127.0.0.1", city.smtp_port, timeout=15) as other:
            other.ehlo("y")
            other.mail("someone@example.org")
            code, text = other.rcpt(third)
        assert (code, text[:5]) == (451, b"4.3.0") and time.monotonic() - start < LOOKUP + 1

        # a login: NO [UNAVAILABLE] (RFC 5530), not [SERVERBUG] or [AUTHENTICATIONFAILED]
        start = time.monotonic()
        login = imaplib.IMAP4("127.0.0.1", city.imap_port, timeout=15)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            login.login(third, PASSWORD)
        assert time.monotonic() - start < LOOKUP + 1
        login.shutdown()

        # the session in IDLE is told the store is gone
        assert idle.read_until(b"* BYE").startswith(b"* BYE [UNAVAILABLE]")

        # the message in flight: 451 before the client's timeout
        data.join(COMMIT + 5)
        assert in_flight["reply"][0] == 451 and in_flight["reply"][1].startswith(b"4.3.0")
        assert in_flight["seconds"] < COMMIT + 1

        assert smtp_greeting_seconds(city) < 1  # the listeners themselves never waited
    finally:
        proxy.thaw()
    # The frozen transaction now reaches the database: it is rolled back, not committed. The
    # client's retry (behind it in the same writer) is the only copy stored.
    sender.mail("someone@example.org")
    assert sender.rcpt(abuser)[0] == 250
    assert sender.data(_message("in-flight", abuser))[0] == 250
    sender.quit()
    stored = city.server.inbox(abuser)
    assert len(stored) == 1 and b"Subject: in-flight" in stored[0]
    assert_responsive(city)

    tracebacks = [(r.name, r.getMessage()) for r in caplog.records if r.exc_info]
    assert len(tracebacks) <= 1, tracebacks  # once per outage, at most
    outage = [r for r in caplog.records if r.name == "civicmail.store"]
    assert sum(1 for r in outage if r.getMessage().startswith("store unavailable")) >= 3  # one line each
    assert outage[-1].getMessage().startswith("store available again")


def test_a_locked_sqlite_answers_451_in_time_and_never_stores_late(city_factory):  # noqa: F811
    city = city_factory(*DEADLINES, "store.busy_timeout=60")  # the lock outlasts the deadline
    abuser = city.addresses[0]
    with smtplib.SMTP("127.0.0.1", city.smtp_port, timeout=15) as c:
        c.ehlo("x")
        c.mail("someone@example.org")
        assert c.rcpt(abuser)[0] == 250
        blocker = sqlite3.connect(city.server.config.data_dir / "civicmail.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            start = time.monotonic()
            code, text = c.data(_message("while-locked", abuser))
            assert (code, text[:5]) == (451, b"4.3.0") and time.monotonic() - start < COMMIT + 1
        finally:
            blocker.execute("ROLLBACK")  # the writer now gets the lock, and must roll back
            blocker.close()
        c.mail("someone@example.org")
        c.rcpt(abuser)
        assert c.data(_message("after-the-lock", abuser))[0] == 250
    stored = city.server.inbox(abuser)
    assert len(stored) == 1 and b"after-the-lock" in stored[0]


def test_a_commit_is_refused_after_its_deadline(store_url):
    """Store.commit_before: on PostgreSQL the database itself compares the deadline with its clock,
    in the round trip of the COMMIT, so a COMMIT held up on the way is refused when it arrives."""
    store = Store(store_url)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
        for n, at in ((1, time.time() - 0.01), (2, time.time() + 30)):
            with store.sessions() as session:
                session.execute(text("INSERT INTO scratch VALUES (:n)"), {"n": n})
                if n == 1:
                    with pytest.raises(Exception) as raised:
                        store.commit_before(session, at)
                    assert is_outage(raised.value)
                else:
                    store.commit_before(session, at)
        with store.engine.connect() as conn:
            assert [r[0] for r in conn.exec_driver_sql("SELECT x FROM scratch")] == [2]
    finally:
        store.dispose()


def test_an_outage_logs_one_traceback_then_one_line_per_failure(caplog):
    log = OutageLog(logging.getLogger("civicmail.store.test"), clock=lambda: 0.0)
    caplog.set_level(logging.WARNING, logger="civicmail.store.test")
    locked = sqlite3.OperationalError("database is locked")
    for what in ("rcpt", "rcpt", "login"):
        log.failed(what, locked)
    log.succeeded()
    log.succeeded()  # nothing more: the outage is over
    log.failed("rcpt", locked)  # a new outage: its own traceback
    lines = [(r.getMessage().split(":")[0], bool(r.exc_info)) for r in caplog.records]
    assert lines == [("store unavailable (rcpt)", True), ("store unavailable (rcpt)", False),
                     ("store unavailable (login)", False), ("store available again after 0.0 s (3 failures)", False),
                     ("store unavailable (rcpt)", True)]

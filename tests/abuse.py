"""The hardening bar (issue 11): while one client, citizen or file abuses the server, everyone else
is still served. ``city`` runs every service of `civicmail serve` on one loop (real sockets,
ephemeral ports, SQLite) with three citizens; ``assert_responsive`` checks, from fresh
connections, that a new SMTP client is greeted and another citizen's IMAP LOGIN completes.

Use it in a test that starts an abuse (threads or sockets of its own), then calls
``assert_responsive(city)`` while the abuse is still running."""
from __future__ import annotations

import datetime as dt
import imaplib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mailserver.identity import idnumber
from mailserver.registry import Registry
from mailserver.registry.citizens import add_citizen
from tests.serverkit import LoopServer, prepared_city

PASSWORD = "correct horse battery"
#: every listener of `serve` on an ephemeral port
ALL_PORTS_ZERO = ("smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0", "submissions.listen=127.0.0.1:0",
                  "imap.listen=127.0.0.1:0", "imaps.listen=127.0.0.1:0", "http.listen=127.0.0.1:0",
                  "http.metrics_listen=127.0.0.1:0")
#: the issue's bar: a greeting and a LOGIN within one second while the abuse runs (CIVICMAIL_RESPONSIVE
#: scales it on a machine known to be slower; the bar itself is the issue's, not a measurement)
WITHIN = float(os.environ.get("CIVICMAIL_RESPONSIVE", "1.0"))


@dataclass
class City:
    server: LoopServer
    #: three citizens: [0] is the abuser, [1] and [2] are the bystanders
    addresses: list[str]

    def port(self, kind: str) -> int:
        return self.server.port(kind)

    @property
    def imap_port(self) -> int:
        return self.server.port("imap")

    @property
    def smtp_port(self) -> int:
        return self.server.port("smtp")

    def imap(self, user: int = 0, login: bool = True, timeout: float = 30) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=timeout)
        if login:
            c.login(self.addresses[user], PASSWORD)
        return c


def _populate(reg: Registry) -> list[str]:
    return [add_citizen(reg, name, idnumber.make("330106", dt.date(1981, 2, n + 1), 300 + n), password=PASSWORD).address
            for n, name in enumerate(("李强", "陈静", "赵敏"))]


def start_city(data_dir, *overrides: str, store_url: str | None = None) -> City:
    config, addresses = prepared_city(data_dir, ALL_PORTS_ZERO + overrides, _populate, store_url)
    return City(LoopServer(config).start(), addresses)


@pytest.fixture
def city_factory(tmp_path):
    running: list[City] = []
    made = itertools.count()  # a start made again (serverkit.on_free_ports) gets a directory of its own

    def make(*overrides: str, store_url: str | None = None) -> City:
        c = start_city(tmp_path / f"city{next(made)}", *overrides, store_url=store_url)
        running.append(c)
        return c

    yield make
    for c in running:
        c.server.stop()


@pytest.fixture
def city(city_factory) -> City:
    return city_factory()


def smtp_greeting_seconds(city: City, timeout: float = 30) -> float:
    """Seconds from connect to a complete 220 greeting on the inbound SMTP port."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", city.smtp_port), timeout=timeout) as sock:
        f = sock.makefile("rb")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        elapsed = time.monotonic() - start
        assert line.startswith(b"220"), line
        sock.sendall(b"QUIT\r\n")
    return elapsed


def imap_login_seconds(city: City, user: int = 1, timeout: float = 30) -> float:
    """Seconds from connect to the tagged OK of another citizen's LOGIN."""
    start = time.monotonic()
    c = imaplib.IMAP4("127.0.0.1", city.imap_port, timeout=timeout)
    typ, _ = c.login(city.addresses[user], PASSWORD)
    elapsed = time.monotonic() - start
    assert typ == "OK"
    c.logout()
    return elapsed


def assert_responsive(city: City, within: float = WITHIN) -> None:
    """A new SMTP connection is greeted, and a bystander's IMAP LOGIN completes, within ``within``
    seconds each (measured from fresh connections while the caller's abuse runs)."""
    greet = smtp_greeting_seconds(city)
    login = imap_login_seconds(city)
    assert greet < within, f"SMTP greeting took {greet:.2f} s under abuse"
    assert login < within, f"IMAP LOGIN took {login:.2f} s under abuse"


def assert_responsive_while(city: City, *abusers: Callable[[threading.Event], None], warmup: float = 0.5,
                            join: float = 120) -> None:
    """Run each ``abuser(stop)`` in a thread of its own (each loops until ``stop`` is set), probe
    with ``assert_responsive`` after ``warmup`` seconds, then stop them; an abuser that raised
    fails the test."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(abuser: Callable[[threading.Event], None]) -> None:
        try:
            abuser(stop)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in abusers]
    for t in threads:
        t.start()
    try:
        time.sleep(warmup)
        assert_responsive(city)
    finally:
        stop.set()
        for t in threads:
            t.join(join)
    assert not errors, errors[:1]

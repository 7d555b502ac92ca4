"""Issue 11, item 1: one gate for every listener's connections, bounded by the process's file
limit. Past it a new connection gets a short refusal (SMTP 421, IMAP * BYE, HTTP 503) and the
listeners go on; refusals are logged once per burst, then summarised."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from mailserver.admission import FD_RESERVE, connection_limit
from tests.abuse import ALL_PORTS_ZERO, _populate, assert_responsive, city, city_factory  # noqa: F401
from tests.serverkit import prepared_city

HTTP_SERVICE = "citizen services HTTP"
AUTOCONFIG = b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.hz.example.cn\r\n\r\n"


def first_line(port: int, source: str, send: bytes = b"", timeout: float = 10) -> tuple[bytes, float]:
    """Connect from ``source``, send ``send``; the server's first line and the seconds it took.
    The server must close the connection after it (a refusal)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        if send:
            sock.sendall(send)
        f = sock.makefile("rb")
        line = f.readline()
        elapsed = time.monotonic() - started
        assert f.read() is not None  # the rest, up to the close
        f.close()
    return line, elapsed


def open_held(port: int, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    greeting = b""
    while not greeting.endswith(b"\n"):
        greeting += sock.recv(1)
    return sock, greeting


def wait_until_free(gate, seconds: float = 5) -> None:
    """Until every place in the gate is free (a server closes its side after the client read)."""
    deadline = time.monotonic() + seconds
    while gate.open:
        assert time.monotonic() < deadline, f"{gate.open} places still taken"
        time.sleep(0.05)


def http_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(AUTOCONFIG)
        return sock.makefile("rb").readline()


@pytest.mark.parametrize("configured, file_limit, expected", [
    (0, 1024, 1024 - FD_RESERVE),       # the usual soft limit
    (0, 65536, 65536 - FD_RESERVE),     # civicmail.service's LimitNOFILE
    (0, 256, 192),                      # a small limit keeps a quarter
    (500, 1024, 500),                   # the key lowers it
    (5000, 1024, 1024 - FD_RESERVE),    # but never raises it past the file limit
    (0, -1, 1 << 20),                   # RLIM_INFINITY
    (0, 8, 6),
])
def test_the_limit_is_the_file_limit_less_a_reserve(configured, file_limit, expected):
    assert connection_limit(configured, file_limit) == expected


def test_past_the_limit_every_listener_refuses_at_once_and_serves_again_after(city_factory, caplog):  # noqa: F811
    """server.max_connections=12 held by 12 addresses (6 IMAP, 6 SMTP, none over a per-address
    cap): 30 more IMAP clients, an SMTP one and an HTTP one are each refused within a second;
    one log line per listener, then one summary; when the twelve leave, all is served again."""
    caplog.set_level(logging.WARNING, "civicmail.admission")
    city = city_factory("server.max_connections=12")
    gate = city.server.ctx.gate
    gate.refusals.interval = 0.5  # the summary after half a second instead of a minute
    http_port = city.port(HTTP_SERVICE)
    held = [open_held(city.imap_port, f"127.0.0.{3 + i}") for i in range(6)]
    held += [open_held(city.smtp_port, f"127.0.0.{9 + i}") for i in range(6)]
    assert all(g.startswith((b"* OK", b"220 ")) for _, g in held)
    assert gate.open == 12

    for i in range(30):
        line, took = first_line(city.imap_port, f"127.0.1.{1 + i}")
        assert line == b"* BYE [UNAVAILABLE] server busy, try again later\r\n"
        assert took < 1
    line, took = first_line(city.smtp_port, "127.0.2.1")
    assert line == b"421 4.7.0 Server busy, try again later\r\n" and took < 1
    line, took = first_line(http_port, "127.0.2.2", AUTOCONFIG)
    assert line == b"HTTP/1.1 503 Service Unavailable\r\n" and took < 1
    assert gate.open == 12  # the refused ones took no place

    firsts = [m for m in (r.getMessage() for r in caplog.records) if "refused a connection" in m]
    assert [m.split(":")[0] for m in firsts] == ["imap", "smtp", "http"]
    assert "at the limit of 12 client connections" in firsts[0]
    deadline = time.monotonic() + 5
    while not (summary := [r.getMessage() for r in caplog.records if "more connections" in r.getMessage()]):
        assert time.monotonic() < deadline, "no summary line"
        time.sleep(0.1)
    assert summary == ["imap: refused 29 more connections from 29 addresses in the last 0.5 s: "
                       "at the limit of 12 client connections (server.max_connections)"]

    for sock, _ in held:
        sock.close()
    wait_until_free(gate)
    assert_responsive(city)
    assert http_get(http_port) == b"HTTP/1.1 200 OK\r\n"
    wait_until_free(gate)  # every connection gave its place back


def _serve_with_file_limit(config, limit: int, *overrides: str) -> subprocess.Popen:
    """`civicmail serve` in a child whose soft and hard open-file limits are ``limit``."""
    args = ["civicmail", "-c", str(config.source)]
    for o in ALL_PORTS_ZERO + overrides:
        args += ["--set", o]
    code = ("import resource, runpy, sys\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
            f"sys.argv = {args + ['serve']!r}\n"
            "runpy.run_module('mailserver.cli', run_name='__main__')\n")
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_serve_derives_the_limit_from_its_file_limit_and_never_runs_out(tmp_path):
    """The issue's case, scaled down: a `serve` whose file limit is 256 faced with 300 idle IMAP
    connections (from one address, its per-address cap lifted) holds 192 (256 less a quarter),
    refuses the rest with * BYE, answers SMTP (421) and HTTP (503) meanwhile, logs no "Too many
    open files", and serves everyone once the connections go."""
    config, addresses = prepared_city(tmp_path / "city", ALL_PORTS_ZERO, _populate)
    proc = _serve_with_file_limit(config, 256, "imap.max_preauth_connections_per_ip=1000")
    log: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "civicmail ready" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    held: list[socket.socket] = []
    try:
        assert ready.wait(120) and proc.poll() is None, "".join(log[-20:])
        text = "".join(log)
        assert "accepting at most 192 client connections (open file limit 256)" in text
        ports = {name: int(m.group(1)) for name, pattern in (("imap", r"imap listening on 127.0.0.1:(\d+)"),
                                                              ("smtp", r"SMTP smtp listening on 127.0.0.1:(\d+)"),
                                                              ("http", r"HTTP listening on 127.0.0.1:(\d+)"))
                 if (m := re.search(pattern, text))}
        greetings = []
        for _ in range(300):
            sock, greeting = open_held(ports["imap"], "127.0.0.1")
            greetings.append(greeting)
            if greeting.startswith(b"* OK"):
                held.append(sock)
            else:
                sock.close()
        assert len(held) == 192
        assert set(greetings[192:]) == {b"* BYE [UNAVAILABLE] server busy, try again later\r\n"}
        assert first_line(ports["smtp"], "127.0.0.1")[0].startswith(b"421 4.7.0")
        assert first_line(ports["http"], "127.0.0.1", AUTOCONFIG)[0].startswith(b"HTTP/1.1 503")
        for sock in held:
            sock.close()
        held.clear()
        deadline = time.monotonic() + 10
        while (line := first_line(ports["smtp"], "127.0.0.1", b"QUIT\r\n")[0]).startswith(b"421"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert line.startswith(b"220 ")
        import imaplib

        c = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10)
        assert c.login(addresses[1], "correct horse battery")[0] == "OK"
        c.logout()
        assert http_get(ports["http"]) == b"HTTP/1.1 200 OK\r\n"
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = "".join(log)
    assert code == 0, text[-3000:]
    assert "Too many open files" not in text and "out of system resource" not in text
    # one line per listener's burst (the summary would come after a minute)
    assert [line.split(": ")[1].split()[0] for line in log if "refused a connection" in line] == ["imap", "smtp", "http"]

"""Implicit-TLS ports (IMAPS, SMTPS) admit a connection at TCP accept, before its TLS handshake
(admission.TLSAfterAdmission): connections that never send a ClientHello hold places under
server.max_connections, the next is refused at once, and server.tls_handshake_timeout closes them."""
from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time

from tests.abuse import PASSWORD, assert_responsive, city, city_factory  # noqa: F401

#: the gate's cap and the handshake timeout of these tests
CAP = 6
HANDSHAKE = 3.0


def silent(port: int) -> socket.socket:
    """A TCP connection that never starts TLS."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def wait_open(city, n: int, within: float = 5.0) -> None:
    gate = city.server.ctx.gate
    deadline = time.monotonic() + within
    while gate.open != n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gate.open == n, f"{gate.open} connections hold the gate, expected {n}"


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (fails if it does not within ``seconds``)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    assert sock.recv(1) == b""
    return time.monotonic() - start


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_connections_without_a_handshake_hold_the_gate_until_the_timeout(city_factory):  # noqa: F811
    city = city_factory(f"server.max_connections={CAP}", f"server.tls_handshake_timeout={HANDSHAKE}")
    imaps, smtps = city.port("imaps"), city.port("submissions")
    hung = [silent(imaps), silent(imaps), silent(smtps), silent(smtps)]
    wait_open(city, 4)  # counted before any handshake
    assert_responsive(city)  # the plain listeners are served meanwhile
    hung += [silent(imaps), silent(smtps)]
    wait_open(city, CAP)
    for port in (imaps, smtps):  # the next is refused at once, not left to a 60 s handshake
        with silent(port) as refused:
            assert closed_within(refused, 2.0) < 1.0
    with socket.create_connection(("127.0.0.1", city.smtp_port), timeout=10) as plain:
        assert plain.makefile("rb").readline().startswith(b"421 4.7.0")  # the gate is one for all listeners
    started = time.monotonic()
    for sock in hung:
        closed_within(sock, HANDSHAKE + 5)
        sock.close()
    assert HANDSHAKE - 1 < time.monotonic() - started < HANDSHAKE + 3
    wait_open(city, 0)
    with imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=client_tls(), timeout=10) as client:
        assert client.login(city.addresses[1], PASSWORD)[0] == "OK"
    with smtplib.SMTP_SSL("127.0.0.1", smtps, context=client_tls(), timeout=10) as client:
        assert client.ehlo()[0] == 250
        assert client.login(city.addresses[1], PASSWORD)[0] == 235
    wait_open(city, 0)


def test_a_failed_handshake_gives_its_place_back(city):  # noqa: F811
    for port in (city.port("imaps"), city.port("submissions")):
        with silent(port) as sock:
            sock.sendall(b"EHLO not-a-client-hello\r\n")
            closed_within(sock, 5)
    wait_open(city, 0)
    with imaplib.IMAP4_SSL("127.0.0.1", city.port("imaps"), ssl_context=client_tls(), timeout=10) as client:
        assert client.login(city.addresses[2], PASSWORD)[0] == "OK"
    wait_open(city, 0)

"""Implicit-TLS ports (IMAPS, SMTPS) admit a connection at TCP accept, before its TLS handshake
(admission.TLSAfterAdmission): connections that never send a ClientHello hold places under
server.max_connections, the next is refused at once, and server.tls_handshake_timeout closes them."""
from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time

import pytest

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


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_a_client_hello_sent_at_once_is_never_lost(loop_name, tmp_path):
    """Clients that send their ClientHello the moment TCP connects, one after another: each is
    greeted. Before the listener handed accepted sockets to the TLS layer itself, a hello that
    arrived before the handshake task ran went to the clear protocol (uvloop reads a new
    transport at once) and that client waited out the handshake timeout."""
    import asyncio
    import threading

    import uvloop

    from mailserver.admission import TLSAfterAdmission
    from mailserver.identity.certs import make_self_signed

    make_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", "localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    admitted, released = [], []

    class Greeter(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"* OK hello\r\n")

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    listener = loop.run_until_complete(TLSAfterAdmission(
        lambda ip: admitted.append(ip) or True, released.append, server_tls, 5.0, Greeter).listen("127.0.0.1", 0))
    port = listener.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        greeted = 0
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    client_tls().wrap_socket(raw) as tls:
                greeted += tls.recv(64).startswith(b"* OK hello")
        assert greeted == 40 and len(admitted) == 40 and released == []
    finally:
        loop.call_soon_threadsafe(listener.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

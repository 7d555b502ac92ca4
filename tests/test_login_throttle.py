"""The login throttle holds under concurrency and cannot be stepped around (issue 11, items 6-8):
attempts are reserved before the password is checked, so N simultaneous wrong logins from one IP
are bounded by the limits; one normalisation of the login name serves the throttle and the
lookup; SMTP AUTH PLAIN, like IMAP, refuses to act for another authorization identity."""
from __future__ import annotations

import base64
import logging
import smtplib
import socket

import pytest

from tests.abuse import PASSWORD, assert_responsive, city, city_factory  # noqa: F401  (fixtures)

VERIFIED = b"[AUTHENTICATIONFAILED]"  # the password was checked, and was wrong
THROTTLED = b"[UNAVAILABLE]"  # refused unchecked


def _connected(port: int, n: int) -> list[tuple[socket.socket, object]]:
    out = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = sock.makefile("rb")
        out.append((sock, f))
    return out


def _close(clients) -> None:
    for sock, f in clients:
        f.close()
        sock.close()


def _tagged(f) -> bytes:
    line = f.readline()
    while line.startswith(b"* "):
        line = f.readline()
    return line


def imap_logins_at_once(city, logins: list[tuple[str, str]], during=None) -> list[bytes]:  # noqa: F811
    """Send every LOGIN on its own connection in one burst (after all greetings), run ``during``
    while they are in flight, and return the tagged replies."""
    clients = _connected(city.imap_port, len(logins))
    try:
        for _, f in clients:
            assert f.readline().startswith(b"* OK")
        for (sock, _), (user, password) in zip(clients, logins):
            sock.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        if during:
            during()
        return [_tagged(f) for _, f in clients]
    finally:
        _close(clients)


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_simultaneous_wrong_logins_for_one_account_are_bounded_by_its_limit(city_factory, caplog):  # noqa: F811
    city = city_factory("login.max_failures_per_account=10", "login.max_failures_per_ip=1000",
                        "imap.max_preauth_connections_per_ip=200")
    victim = city.addresses[0]
    caplog.set_level(logging.INFO, logger="civicmail.auth")
    replies = imap_logins_at_once(city, [(victim, f"guess{n}") for n in range(100)],
                                  during=lambda: assert_responsive(city))  # the bystander is not locked out
    assert all(r.startswith(b"a NO ") for r in replies), set(replies)
    assert sum(VERIFIED in r for r in replies) == 10
    assert sum(THROTTLED in r for r in replies) == 90
    # what the operator sees: one line per attempt, the checked ones and the refused ones
    logged = [r.getMessage() for r in caplog.records if r.name == "civicmail.auth"]
    assert sum(m.startswith("auth-failed client=127.0.0.1 port=imap") for m in logged) == 10
    assert sum(m.startswith("auth-throttled client=127.0.0.1 port=imap") for m in logged) == 90
    c = city.imap(login=False)
    try:
        with pytest.raises(c.error, match="UNAVAILABLE"):
            c.login(victim, PASSWORD)  # the account stays throttled: refused unchecked
    finally:
        c.logout()


def test_simultaneous_wrong_logins_from_one_ip_are_bounded_by_its_limit(city_factory):  # noqa: F811
    city = city_factory("login.max_failures_per_account=10", "login.max_failures_per_ip=20",
                        "imap.max_preauth_connections_per_ip=200")
    replies = imap_logins_at_once(city, [(f"nobody{n}@hz.example.cn", "guess") for n in range(100)])
    assert sum(VERIFIED in r for r in replies) == 20
    assert sum(THROTTLED in r for r in replies) == 80


def test_simultaneous_smtp_auth_is_bounded_by_the_same_throttle(city_factory):  # noqa: F811
    city = city_factory("login.max_failures_per_account=5", "login.max_failures_per_ip=1000")
    victim = city.addresses[0]
    clients = _connected(city.port("submission"), 30)
    try:
        for sock, f in clients:
            assert f.readline().startswith(b"220")
            sock.sendall(b"EHLO attacker\r\n")
            while not f.readline().startswith(b"250 "):
                pass
        for n, (sock, _) in enumerate(clients):
            sock.sendall(f"AUTH PLAIN {plain('', victim, f'guess{n}')}\r\n".encode())
        replies = [f.readline() for _, f in clients]
    finally:
        _close(clients)
    assert sum(r.startswith(b"535 5.7.8") for r in replies) == 5
    assert sum(r.startswith(b"454 4.7.0") for r in replies) == 25


@pytest.mark.parametrize("variant", [" {}", "{} ", "{}\t", str.upper, "\u3000{}"])
def test_a_locked_account_stays_locked_under_another_spelling_of_its_name(city_factory, variant):  # noqa: F811
    city = city_factory("login.max_failures_per_account=3", "login.max_failures_per_ip=1000")
    victim = city.addresses[0]
    spelled = variant.format(victim) if isinstance(variant, str) else variant(victim)
    replies = imap_logins_at_once(city, [(victim, "wrong")] * 3)
    assert all(VERIFIED in r for r in replies)
    # IMAP: the right password under another spelling is refused unchecked
    [reply] = imap_logins_at_once(city, [(spelled, PASSWORD)])
    assert THROTTLED in reply, reply
    # SMTP AUTH: the same throttle, the same name
    with smtplib.SMTP("127.0.0.1", city.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        code, text = c.docmd("AUTH", "PLAIN " + plain("", spelled, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0")
    # and another citizen is not affected
    c = city.imap(user=1)
    c.logout()


def test_smtp_auth_plain_refuses_another_authorization_identity(city):  # noqa: F811
    alice, bob = city.addresses[0], city.addresses[1]
    with smtplib.SMTP("127.0.0.1", city.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        # RFC 4616: the credentials are alice's, the identity asked for is bob's
        code, text = c.docmd("AUTH", "PLAIN " + plain(bob, alice, PASSWORD))
        assert (code, text[:5]) == (535, b"5.7.8")
        code, text = c.docmd("AUTH", "PLAIN " + plain("traffic-police", alice, PASSWORD))
        assert (code, text[:5]) == (535, b"5.7.8")
        # the session goes on; an authzid naming the same identity is accepted
        code, text = c.docmd("AUTH", "PLAIN " + plain(alice.upper(), alice, PASSWORD))
        assert (code, text[:5]) == (235, b"2.7.0")
        code, _ = c.mail(alice)
        assert code == 250
    with smtplib.SMTP("127.0.0.1", city.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        code, text = c.docmd("AUTH", "PLAIN " + plain("", alice, PASSWORD))
        assert (code, text[:5]) == (235, b"2.7.0")


def test_imap_authenticate_plain_refuses_another_authorization_identity(city):  # noqa: F811
    alice, bob = city.addresses[0], city.addresses[1]
    c = city.imap(login=False)
    try:
        with pytest.raises(c.error, match="AUTHENTICATIONFAILED"):
            c.authenticate("PLAIN", lambda _: f"{bob}\0{alice}\0{PASSWORD}".encode())
        typ, _ = c.authenticate("PLAIN", lambda _: f" {alice.upper()}\0{alice}\0{PASSWORD}".encode())
        assert typ == "OK"
    finally:
        c.logout()

"""Authenticated submission: TLS before AUTH, who may send as whom and to where."""
from __future__ import annotations

import asyncio
import base64
import smtplib

import aiosmtplib
import pytest

from mailserver.outbound.queue import list_entries
from mailserver.smtp.policy import auth_requires_tls

from .conftest import DOMAIN, PASSWORD, client_tls, message


def submit(server, login: str, kind: str = "submission", starttls: bool = True) -> smtplib.SMTP:
    if kind == "submissions":
        c = smtplib.SMTP_SSL("127.0.0.1", server.port(kind), timeout=30, context=client_tls())
    else:
        c = smtplib.SMTP("127.0.0.1", server.port(kind), timeout=30)
    c.ehlo("laptop")
    if starttls and kind == "submission":
        c.starttls(context=client_tls())
        c.ehlo("laptop")
    c.login(login, PASSWORD)
    return c


def test_auth_needs_tls_off_loopback_and_without_development():
    assert auth_requires_tls(implicit_tls=False, development=True, client_ip="192.0.2.7")
    assert auth_requires_tls(implicit_tls=False, development=False, client_ip="127.0.0.1")
    assert not auth_requires_tls(implicit_tls=False, development=True, client_ip="::1")
    assert not auth_requires_tls(implicit_tls=True, development=False, client_ip="192.0.2.7")


def test_auth_before_starttls_is_refused_in_production_mode(server_factory):
    server = server_factory("server.development=false")
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        assert not c.has_extn("auth")
        code, reply = c.docmd("AUTH", "PLAIN AGFiYwBkZWY=")
        assert (code, reply[:6]) == (538, b"5.7.11")
        assert c.docmd("AUTH", "XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHgBAQ==")[0] == 538  # a token no more than a password
        assert c.mail(server.people.alice)[0] == 530  # and nothing is sent without logging in
        c.rset()
        assert c.starttls(context=client_tls()) == (220, b"2.0.0 Ready to start TLS")
        c.ehlo("laptop")
        assert "PLAIN" in c.esmtp_features["auth"] and "LOGIN" in c.esmtp_features["auth"]
        assert "OAUTHBEARER" in c.esmtp_features["auth"] and "XOAUTH2" in c.esmtp_features["auth"]
        assert c.login(server.people.alice, PASSWORD)[0] == 235


def test_development_mode_allows_auth_on_loopback_without_tls(server):
    with submit(server, server.people.alice, starttls=False) as c:
        assert c.sock is not None and not hasattr(c.sock, "cipher")


@pytest.mark.parametrize("kind", ["submission", "submissions"])
def test_citizen_sends_to_local_and_remote(server, kind):
    p = server.people
    raw = message(p.alice, p.bob, f"from alice {kind}", extra=f"Cc: friend@elsewhere.example\r\n")
    with submit(server, p.alice, kind) as c:
        c.user, c.password = "", ""
        assert c.sendmail(p.alice, [p.bob, "friend@elsewhere.example"], raw) == {}
    [stored] = server.inbox(p.bob)
    assert stored.endswith(raw)
    assert f"X-Civicmail-Authenticated: citizen={p.alice}\r\n".encode() in stored
    assert b"with ESMTPSA id " in stored
    assert f"auth=pass smtp.auth={p.alice}".encode() in stored
    [queued] = list_entries(server.store)
    assert queued.recipients == ("friend@elsewhere.example",) and queued.sender == p.alice


def test_submission_adds_the_date_and_message_id_a_message_lacks(server):
    """RFC 6409 8.3 and 8.4: the submission server adds Date and Message-ID (with our domain)
    to a message without them, and leaves a message's own alone; mail from outside (port 25,
    no login) is stored as it came."""
    import datetime as dt
    import email
    import email.policy
    import email.utils

    p = server.people
    bare = f"From: {p.alice}\r\nTo: {p.bob}\r\nSubject: bare\r\n\r\nno date, no id\r\n".encode()
    own = message(p.alice, p.bob, "own", extra="Date: Mon, 1 Jan 2024 08:00:00 +0800\r\n")
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with submit(server, p.alice) as c:
        c.sendmail(p.alice, [p.bob], bare)
        c.sendmail(p.alice, [p.bob], own)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.sendmail("someone@elsewhere.example", [p.bob], bare.replace(p.alice.encode(), b"someone@elsewhere.example"))
    added, kept, inbound = (email.message_from_bytes(r, policy=email.policy.default) for r in server.inbox(p.bob))
    assert len(added.get_all("Date")) == 1 and len(added.get_all("Message-ID")) == 1
    assert before <= email.utils.parsedate_to_datetime(added["Date"]) <= before + dt.timedelta(minutes=1)
    assert added["Message-ID"].endswith(f"@{DOMAIN}>") and added["Message-ID"] != str(kept["Message-ID"])
    assert kept.get_all("Date") == ["Mon, 01 Jan 2024 08:00:00 +0800"] and kept.get_all("Message-ID") == ["<own@test>"]
    assert inbound["Date"] is None and inbound["Message-ID"] is None


def test_citizen_may_send_only_as_themselves(server):
    p = server.people
    with submit(server, p.alice) as c:
        code, reply = c.mail(p.bob)
        assert (code, reply[:5]) == (553, b"5.7.1")
        c.rset()
        c.mail(p.alice)
        c.rcpt(p.bob)
        code, reply = c.data(message(p.bob, p.bob, "forged from"))
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert c.mail("<>")[0] == 553
    assert server.inbox(p.bob) == []


def test_agency_sending_as_another_agency_is_refused(server):
    p = server.people
    with submit(server, p.traffic) as c:
        code, reply = c.mail(p.social_sender)
        assert (code, reply[:5]) == (553, b"5.7.1")
        c.rset()
        c.mail(p.traffic_sender)
        c.rcpt(p.alice)
        code, reply = c.data(message(p.social_sender, p.alice, "wrong from"))
        assert (code, reply[:5]) == (550, b"5.7.1")
    assert server.inbox(p.alice) == []


def test_agency_notice_types_must_be_granted(server):
    p = server.people
    with submit(server, p.traffic) as c:
        granted = message(p.traffic_sender, p.alice, "granted", extra="X-Civicmail-Notice-Type: licence-renewal\r\n")
        assert c.sendmail(p.traffic_sender, [p.alice], granted) == {}
        c.mail(p.traffic_sender)
        c.rcpt(p.alice)
        code, reply = c.data(message(p.traffic_sender, p.alice, "ungranted",
                                     extra="X-Civicmail-Notice-Type: pension-statement\r\n"))
        assert (code, reply[:5]) == (550, b"5.7.1") and b"notice type" in reply
    [stored] = server.inbox(p.alice)
    assert b"X-Civicmail-Authenticated: agency=traffic-police\r\n" in stored
    assert stored.endswith(granted)


def test_agency_may_not_send_to_other_domains(server):
    p = server.people
    with submit(server, p.traffic) as c:
        c.mail(p.traffic_sender)
        code, reply = c.rcpt("someone@elsewhere.example")
        assert (code, reply[:5]) == (554, b"5.7.1")
    assert list_entries(server.store) == []


def test_agency_rate_is_limited(server_factory):
    server = server_factory("submission.agency_rate_per_minute=1")
    p = server.people
    with submit(server, p.traffic) as c:
        c.sendmail(p.traffic_sender, [p.alice], message(p.traffic_sender, p.alice, "first"))
        code, reply = c.mail(p.traffic_sender)
        assert (code, reply[:5]) == (450, b"4.7.1")


def test_forged_identity_header_is_replaced(server):
    p = server.people
    raw = message(p.alice, p.bob, "forged id", extra="X-Civicmail-Authenticated: agency=traffic-police\r\n")
    with submit(server, p.alice) as c:
        c.sendmail(p.alice, [p.bob], raw)
    [stored] = server.inbox(p.bob)
    assert stored.lower().count(b"x-civicmail-authenticated") == 1
    assert f"X-Civicmail-Authenticated: citizen={p.alice}".encode() in stored


def test_wrong_password_then_throttled(server_factory):
    server = server_factory("login.max_failures_per_account=2")
    alice = server.people.alice

    def plain(password: str) -> str:
        return "PLAIN " + base64.b64encode(f"\0{alice}\0{password}".encode()).decode()

    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        for _ in range(2):
            assert c.docmd("AUTH", plain("wrong")) == (535, b"5.7.8 Authentication credentials invalid")
        # the right password, refused unchecked while the account is throttled
        code, reply = c.docmd("AUTH", plain(PASSWORD))
        assert (code, reply[:5]) == (454, b"4.7.0")


def test_relay_without_auth_on_submission_is_refused(server):
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30) as c:
        c.ehlo("laptop")
        code, reply = c.mail(server.people.alice)
        assert (code, reply[:5]) == (530, b"5.7.0")


def test_aiosmtplib_login_and_send_over_starttls(server):
    p = server.people

    async def send():
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("submission"), tls_context=client_tls(),
                                 start_tls=True)
        async with client:
            await client.login(p.bob, PASSWORD)
            return await client.sendmail(p.bob, [p.alice], message(p.bob, p.alice, "via aiosmtplib"))

    errors, reply = asyncio.run(send())
    assert errors == {} and reply.startswith("2.0.0 Stored as")
    assert len(server.inbox(p.alice)) == 1


def non_loopback_address() -> str | None:
    """This machine's own non-loopback IPv4 address, if it has one (no packet is sent)."""
    import ipaddress
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ipaddress.ip_address(ip).is_loopback or ip == "0.0.0.0" else ip


def test_auth_before_starttls_is_refused_off_loopback_even_in_development(server_factory):
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("no non-loopback address on this machine (the policy is tested on its own above)")
    server = server_factory(f"submission.listen={ip}:0")  # development = true
    with smtplib.SMTP(ip, server.port("submission"), timeout=30, source_address=(ip, 0)) as c:
        c.ehlo("laptop")
        assert not c.has_extn("auth")
        code, reply = c.docmd("AUTH", "PLAIN AGFiYwBkZWY=")
        assert (code, reply[:6]) == (538, b"5.7.11")
        c.starttls(context=client_tls())
        c.ehlo("laptop")
        assert c.login(server.people.alice, PASSWORD)[0] == 235


def test_shutdown_lets_the_transaction_in_flight_finish(server):
    import threading

    alice = server.people.alice
    c = smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30)
    c.ehlo("x")
    c.mail("someone@example.org")
    c.rcpt(alice)
    listener = next(s for s in server.services if getattr(s, "kind", None) == "smtp")
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    try:
        while not listener.closing:  # the shutdown has begun (a bound only against a hang)
            stopper.join(0.01)
        code, _ = c.data(message("someone@example.org", alice, "in flight at shutdown"))
        assert code == 250
        try:
            code = c.mail("someone@example.org")[0]  # no new transaction: 421 and goodbye
        except (smtplib.SMTPServerDisconnected, OSError):
            code = 421
        assert code == 421
    finally:
        stopper.join(60)
        c.close()
    assert not stopper.is_alive()
    server.start()  # look at the store with a fresh server
    assert [b"in flight at shutdown" in m for m in server.inbox(alice)] == [True]

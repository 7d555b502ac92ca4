"""Inbound SMTP (port 25): local recipients only, trace headers, the smuggling and size limits."""
from __future__ import annotations

import smtplib
import socket

import pytest

from .conftest import DOMAIN, message


def connect(server, kind: str = "smtp") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port(kind), timeout=30)
    client.ehlo("client.example.org")
    return client


def test_ehlo_announces_the_extensions(server):
    with connect(server) as c:
        for ext in ("pipelining", "enhancedstatuscodes", "8bitmime", "smtputf8", "size", "starttls"):
            assert c.has_extn(ext), ext
        assert not c.has_extn("auth")  # inbound takes no logins
        assert c.esmtp_features["size"] == str(server.config.smtp.max_message_size)


def test_one_recipient_is_stored_with_trace_headers(server):
    alice = server.people.alice
    raw = message("someone@example.org", alice, "one recipient")
    with connect(server) as c:
        c.mail("someone@example.org")
        c.rcpt(alice)
        code, reply = c.data(raw)
    assert code == 250 and reply.startswith(b"2.0.0 Stored as ")
    [stored] = server.inbox(alice)
    assert stored.endswith(raw)
    trace = stored[:-len(raw)]
    assert trace.startswith(b"Received: from client.example.org ([127.0.0.1])")
    assert f"by {server.config.server.hostname} (civicmail) with ESMTP".encode() in trace
    assert f"Authentication-Results: {server.config.server.hostname}; none\r\n".encode() in trace
    assert b"X-Civicmail-Authenticated" not in stored


def test_many_recipients_share_one_transaction(server):
    p = server.people
    raw = message("someone@example.org", p.alice, "many recipients")
    with connect(server) as c:
        refused = c.sendmail("someone@example.org", [p.alice, p.bob, p.traffic_sender, p.alice.upper()], raw)
    assert refused == {}
    for address in (p.alice, p.bob, p.traffic_sender):
        assert [m.endswith(raw) for m in server.inbox(address)] == [True]  # once, even if named twice


def test_sub_address_reaches_the_base_mailbox(server):
    alice = server.people.alice
    local, _, domain = alice.partition("@")
    raw = message("someone@example.org", f"{local}+news@{domain}", "sub-addressed")
    with connect(server) as c:
        refused = c.sendmail("someone@example.org", [f"{local}+news@{domain}", alice], raw)
        c.mail("someone@example.org")
        assert c.rcpt(f"nobody+news@{DOMAIN}")[0] == 550
    assert refused == {}
    assert [m.endswith(raw) for m in server.inbox(alice)] == [True]  # both names: one account, stored once


def test_unknown_user_and_relay_are_refused(server):
    with connect(server) as c:
        c.mail("someone@example.org")
        assert c.rcpt(f"nobody@{DOMAIN}") == (550, b"5.1.1 No such mailbox here")
        code, reply = c.rcpt("victim@elsewhere.example")
        assert code == 554 and reply.startswith(b"5.7.1 Relay access denied")
        assert c.rcpt(server.people.alice)[0] == 250
        assert c.data(message("someone@example.org", server.people.alice, "after refusals"))[0] == 250
    assert len(server.inbox(server.people.alice)) == 1


def test_forged_trusted_header_is_removed(server):
    alice = server.people.alice
    forged = ("X-Civicmail-Authenticated: agency=traffic-police\r\n"
              "x-civicmail-authenticated : citizen=x@y\r\n\tfolded continuation\r\n")
    raw = message("someone@example.org", alice, "forged", extra=forged)
    with connect(server) as c:
        c.sendmail("someone@example.org", [alice], raw)
    [stored] = server.inbox(alice)
    assert b"civicmail-authenticated" not in stored.lower()
    assert b"folded continuation" not in stored
    assert stored.endswith(message("someone@example.org", alice, "forged"))


@pytest.mark.parametrize("bad", [b"line one\nline two\r\n", b"bare\rcarriage return\r\n", b"smuggle\n.\r\n"])
def test_bare_cr_or_lf_is_refused(server, bad):
    alice = server.people.alice
    raw = message("someone@example.org", alice, "bare") + bad
    with connect(server) as c:
        c.mail("someone@example.org")
        c.rcpt(alice)
        code, reply = c.data(raw)
        assert (code, reply[:5]) == (550, b"5.6.2")
        assert c.noop()[0] == 250  # the session goes on
    assert server.inbox(alice) == []


def test_oversized_message_and_overlong_line_are_refused(server_factory):
    server = server_factory("smtp.max_message_size=20000")
    alice = server.people.alice
    with connect(server) as c:
        c.mail("someone@example.org")
        c.rcpt(alice)
        code, reply = c.data(message("someone@example.org", alice, "big", body="x" * 900 + ("\r\n" + "y" * 900) * 30))
        assert (code, reply[:5]) == (552, b"5.3.4")
        # declared too big up front
        assert c.mail("someone@example.org", ["SIZE=30000"])[0] == 552
        c.rset()
        c.mail("someone@example.org")
        c.rcpt(alice)
        code, reply = c.data(message("someone@example.org", alice, "long line", body="z" * 1200))
        assert (code, reply[:5]) == (500, b"5.5.2")
    assert server.inbox(alice) == []


@pytest.mark.parametrize("line, accepted", [
    (b"y" * 998, True),  # 998 octets + CRLF: the 1,000 of RFC 5321 4.5.3.1.6
    (b"y" * 999, False),  # 999 + CRLF = 1,001
    (b"." * 999, True),  # a 998-octet line beginning with a dot, stuffed: the added dot does not count
    (b"." * 1000, False),
])
def test_a_text_line_is_at_most_1000_octets_with_its_crlf(server, line, accepted):
    alice = server.people.alice
    sock = raw_session(server, alice)
    try:
        sock.sendall(b"Subject: lines\r\n\r\n" + line + b"\r\n.\r\n")
        reply = read_reply(sock)
        if accepted:
            assert reply.startswith(b"250 2.0.0 Stored as")
        else:
            assert reply == b"500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)\r\n"
        sock.sendall(b"NOOP\r\n")
        assert read_reply(sock).startswith(b"250")  # the session goes on
    finally:
        sock.close()
    assert len(server.inbox(alice)) == int(accepted)


def test_connections_per_ip_are_limited(server_factory):
    server = server_factory("smtp.max_connections_per_ip=2")
    first, second = connect(server), connect(server)
    sock = socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30)
    try:
        assert sock.recv(200).startswith(b"421 4.7.0")
    finally:
        sock.close()
        first.quit()
        second.quit()


def test_messages_per_ip_are_limited(server_factory):
    server = server_factory("smtp.max_messages_per_ip_per_minute=2")
    alice = server.people.alice
    with connect(server) as c:
        for n in range(2):
            c.sendmail("someone@example.org", [alice], message("someone@example.org", alice, f"rate {n}"))
        code, reply = c.mail("someone@example.org")
        assert (code, reply[:5]) == (450, b"4.7.1")
    assert len(server.inbox(alice)) == 2


def raw_session(server, alice: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30)
    sock.sendall(f"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{alice}>\r\nDATA\r\n".encode())
    reply = b""
    while not reply.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"):
        reply += sock.recv(4096)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += sock.recv(4096)
    return reply


@pytest.mark.parametrize("pieces, stored", [
    ([b".\r\n"], b""),  # an empty message
    ([b"X: y\r\n.\r\n"], b"X: y\r\n"),  # one line, then the terminator
    ([b"X: y\r\n\r\n..dot\r\n.x\r\n.\r\n"], b"X: y\r\n\r\n.dot\r\nx\r\n"),  # dot-stuffing undone
    ([b"X: y\r\n\r\nbody\r", b"\n", b".", b"\r", b"\n"], b"X: y\r\n\r\nbody\r\n"),  # terminator in pieces
    ([b"X: y\r\n\r\nend.\r\n", b"a.\r\n.\r\n"], b"X: y\r\n\r\nend.\r\na.\r\n"),
])
def test_data_terminator_and_dot_stuffing(server, pieces, stored):
    alice = server.people.alice
    sock = raw_session(server, alice)
    try:
        for piece in pieces:
            sock.sendall(piece)
        assert read_reply(sock).startswith(b"250 2.0.0 Stored as")
    finally:
        sock.close()
    [message] = server.inbox(alice)
    assert message.endswith(b"; none\r\n" + stored)


def test_mail_forged_from_the_city_domain_is_refused(server_factory):
    """Citizens and agencies send only through authenticated submission, so mail on the inbound
    port naming the city's domain as its sender (envelope or From:) is a forgery, e.g. a fake
    notice from the traffic police. Here loopback is not trusted (smtp.trusted_networks = [])."""
    server = server_factory("smtp.trusted_networks=[]")
    p = server.people
    with connect(server) as c:
        code, reply = c.mail(p.traffic_sender)
        assert (code, reply[:6]) == (550, b"5.7.1 ") and b"authenticated submission" in reply
        assert c.mail(p.traffic_sender.upper().replace(DOMAIN.upper(), DOMAIN))[0] == 550  # any case
        c.rset()
        forged = message("notices@example.org", p.alice, "罚款通知", extra=f"Reply-To: x@example.org\r\n")
        forged = forged.replace(b"From: notices@example.org", f"From: 交警 <{p.traffic_sender}>".encode())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("notices@example.org", [p.alice], forged)
        assert refused.value.smtp_code == 550 and b"From: header" in refused.value.smtp_error
        c.rset()
        genuine = message("friend@example.org", p.alice, "a letter from outside")
        assert c.sendmail("friend@example.org", [p.alice], genuine) == {}
        assert c.sendmail("", [p.alice], genuine) == {}  # a bounce (null sender) is not a forgery
    assert [m.endswith(genuine) for m in server.inbox(p.alice)] == [True, True]


def test_programs_on_trusted_networks_may_send_as_the_city(server):
    """The default trusts loopback (programs on the server itself), as Postfix's mynetworks."""
    p = server.people
    raw = message(p.traffic_sender, p.alice, "from a local program")
    with connect(server) as c:
        assert c.sendmail(p.traffic_sender, [p.alice], raw) == {}
    assert [m.endswith(raw) for m in server.inbox(p.alice)] == [True]

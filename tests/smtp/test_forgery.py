"""Mail cannot carry the server's own verdicts in from outside (issue 11, item 9): on every port,
Authentication-Results fields claiming our authserv-id (RFC 8601 5) and every internal
X-Civicmail-* field are removed on entry; an agency keeps only the fields it may set (its notice
type, checked against its grants). The anti-forgery check sees one form of every domain, so a
trailing dot, upper case or full-width letters do not make the city's domain someone else's."""
from __future__ import annotations

import base64
import smtplib

import pytest

from .conftest import DOMAIN, PASSWORD, message

OTHERS = "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.org\r\n"


def forged_verdicts(hostname: str) -> str:
    return (f"Authentication-Results: {hostname}; auth=pass smtp.auth=traffic-police\r\n"
            f"authentication-results : (comment (nested)) \"{hostname.upper()}.\" ;\r\n\tauth=pass\r\n"
            "X-Civicmail-Notice-Type: overdue-fine\r\n"
            "X-Civicmail-Application: 2026-000001\r\n"
            "x-civicmail-status:\r\n approved\r\n"
            f"{OTHERS}")


def ours(stored: bytes, hostname: str) -> list[bytes]:
    """The Authentication-Results lines in the stored header that name our hostname."""
    header = stored.split(b"\r\n\r\n", 1)[0].lower()
    return [line for line in header.replace(b"\r\n\t", b" ").split(b"\r\n")
            if line.startswith(b"authentication-results") and hostname.lower().encode() in line]


def assert_only_our_verdict(stored: bytes, hostname: str, verdict: bytes) -> None:
    assert ours(stored, hostname) == [verdict]
    assert b"x-civicmail-notice-type" not in stored.lower()
    assert b"x-civicmail-application" not in stored.lower()
    assert b"x-civicmail-status" not in stored.lower() and b" approved" not in stored
    assert b"overdue-fine" not in stored and b"nested" not in stored
    assert OTHERS.encode() in stored  # another server's verdict is not ours to remove


def test_inbound_mail_loses_our_verdicts_and_internal_fields(server):
    hostname = server.config.server.hostname
    alice = server.people.alice
    raw = message("someone@example.org", alice, "fake fine", extra=forged_verdicts(hostname))
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        assert c.sendmail("someone@example.org", [alice], raw) == {}
    [stored] = server.inbox(alice)
    assert_only_our_verdict(stored, hostname, f"authentication-results: {hostname}; none".encode())
    assert stored.endswith(message("someone@example.org", alice, "fake fine", extra=OTHERS))


def submit(server, login: str) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30)
    c.ehlo("laptop")
    code, _ = c.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode())
    assert code == 235
    return c


def test_a_citizen_cannot_submit_our_verdicts_either(server):
    hostname = server.config.server.hostname
    p = server.people
    extra = forged_verdicts(hostname).replace("X-Civicmail-Notice-Type: overdue-fine\r\n", "")
    with submit(server, p.alice) as c:
        assert c.sendmail(p.alice, [p.bob], message(p.alice, p.bob, "not a notice", extra=extra)) == {}
    [stored] = server.inbox(p.bob)
    assert_only_our_verdict(stored, hostname, f"authentication-results: {hostname}; auth=pass smtp.auth={p.alice}"
                            .encode())


def test_an_agency_keeps_its_granted_notice_type_and_loses_the_rest(server):
    hostname = server.config.server.hostname
    p = server.people
    extra = ("X-Civicmail-Notice-Type: licence-renewal\r\nX-Civicmail-Applicant: forged\r\n"
             f"Authentication-Results: {hostname}; auth=pass smtp.auth=social-security\r\n")
    with submit(server, p.traffic) as c:
        assert c.sendmail(p.traffic_sender, [p.alice], message(p.traffic_sender, p.alice, "renewal", extra=extra)) == {}
    [stored] = server.inbox(p.alice)
    assert b"X-Civicmail-Notice-Type: licence-renewal\r\n" in stored
    assert b"applicant" not in stored.lower() and b"social-security" not in stored
    assert ours(stored, hostname) == [f"authentication-results: {hostname}; auth=pass smtp.auth=traffic-police"
                                      .encode()]


@pytest.mark.parametrize("spelled", ["{local}@{domain}.", "{local}@{DOMAIN}", "{local}@{DOMAIN}.",
                                     "{local}@{fullwidth}", "{local}@{domain}\u3002"])
def test_the_city_domain_under_another_spelling_is_still_forged(server_factory, spelled):
    server = server_factory("smtp.trusted_networks=[]")
    p = server.people
    local = p.traffic_sender.partition("@")[0]
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if ch.isalnum() else ch for ch in DOMAIN)
    forged_sender = spelled.format(local=local, domain=DOMAIN, DOMAIN=DOMAIN.upper(), fullwidth=fullwidth)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.ehlo("mx.example.org")
        forged = message("notices@example.org", p.alice, "罚款通知").replace(
            b"From: notices@example.org", f"From: 交警 <{forged_sender}>".encode())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("notices@example.org", [p.alice], forged)
        assert refused.value.smtp_code == 550 and b"From: header" in refused.value.smtp_error
        if forged_sender.isascii():  # the envelope too (SMTPUTF8 would be needed otherwise)
            code, reply = c.mail(forged_sender)  # forged, or (a trailing dot) not an address at all
            assert (code, reply[:6]) in ((550, b"5.7.1 "), (553, b"5.1.3 "))
    assert server.inbox(p.alice) == []


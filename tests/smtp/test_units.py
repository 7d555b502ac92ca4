"""The pure parts: header surgery, policy decisions, reply wording, DSN status, backoff."""
from __future__ import annotations

import datetime as dt
import email
from email import policy as email_policy

import pytest

from mailserver.outbound.dsn import build_dsn, status_of
from mailserver.outbound.runner import retry_delay
from mailserver.registry.auth import Principal
from mailserver.smtp import headers, policy, replies

CITIZEN = Principal("citizen", "a@hz.example.cn", 1, "a@hz.example.cn")
AGENCY = Principal("agency", "traffic-police", 2, "tp@hz.example.cn", "traffic-police",
                   frozenset({"tp@hz.example.cn", "notices@hz.example.cn"}), frozenset({"licence-renewal"}))


@pytest.mark.parametrize("raw, bare", [
    (b"a: b\r\n\r\nbody\r\n", False),
    (b"a: b\r\n\r\nbo\ndy\r\n", True),
    (b"a: b\r\n\r\nbo\rdy\r\n", True),
    (b"a: b\r\n\r\nbody\r\r\n", True),
    (b"", False),
])
def test_bare_line_endings(raw, bare):
    assert headers.has_bare_line_ending(raw) is bare


def test_strip_internal_keeps_everything_else_byte_for_byte():
    raw = (b"From: a@x\r\nX-Civicmail-Authenticated: agency=x\r\n\tcontinued\r\nSubject: s\r\n"
           b"X-CIVICMAIL-AUTHENTICATED\t: citizen=y\r\nX-Civicmail-Notice-Type: t\r\n"
           b"Authentication-Results: Mail.X.Example.; auth=pass\r\n"
           b"Authentication-Results: mx.other.example; spf=pass\r\n"
           b"\r\nX-Civicmail-Authenticated: in the body\r\n")
    assert headers.strip_internal(raw, "mail.x.example") == (
        b"From: a@x\r\nSubject: s\r\nAuthentication-Results: mx.other.example; spf=pass\r\n\r\n"
        b"X-Civicmail-Authenticated: in the body\r\n")
    # an agency keeps what it may set, never the trusted identity
    kept = headers.strip_internal(raw, "mail.x.example", headers.AGENCY_FIELDS | {headers.TRUSTED_HEADER})
    assert b"X-Civicmail-Notice-Type: t\r\n" in kept and b"authenticated\t:" not in kept.lower()
    plain = b"From: a@x\r\n\r\nbody\r\n"
    assert headers.strip_internal(plain, "mail.x.example") is plain  # nothing to do: no copy


@pytest.mark.parametrize("field, authserv_id", [
    (b"Authentication-Results: mail.x.example; none", "mail.x.example"),
    (b"Authentication-Results:mail.x.example;none", "mail.x.example"),
    (b"Authentication-Results: (a (nested) comment)\r\n\t mail.x.example 1; spf=pass", "mail.x.example"),
    (b'Authentication-Results: "mail.x\\.example" ; none', "mail.x.example"),
    (b"Authentication-Results: (\\) still a comment) mail.x.example; none", "mail.x.example"),
    (b"Authentication-Results: ", None),
    (b"Authentication-Results: (" + b"(" * 2000 + b"mail.x.example", None),  # a reader may find it: ours
    (b'Authentication-Results: "mail.x.example', None),
    (b"Authentication-Results: " + b"a" * 990 + b".example", None),
])
def test_authserv_id(field, authserv_id):
    assert headers.authserv_id_of(field) == authserv_id


def test_from_addresses_and_notice_type_match_the_email_package():
    raw = ("From: =?utf-8?b?5byg5Lyf?= <Zhang.Wei@HZ.example.cn>\r\nTo: x@y\r\n"
           "X-Civicmail-Notice-Type:\r\n licence-renewal\r\n\r\nbody\r\n").encode()
    header, _ = headers.split_header(raw)
    assert headers.from_addresses(header) == ["zhang.wei@hz.example.cn"]
    assert headers.field_values(header, headers.NOTICE_TYPE_HEADER) == ["licence-renewal"]
    oracle = email.message_from_bytes(raw, policy=email_policy.default)
    assert oracle["From"].addresses[0].addr_spec.lower() == headers.from_addresses(header)[0]
    assert str(oracle["X-Civicmail-Notice-Type"]).strip() == "licence-renewal"


def test_sender_rules():
    assert policy.check_envelope_sender(CITIZEN, "A@hz.example.cn") is None
    assert policy.check_envelope_sender(CITIZEN, "b@hz.example.cn") == replies.SENDER_NOT_YOURS
    assert policy.check_envelope_sender(CITIZEN, "") == replies.SENDER_EMPTY
    assert policy.check_envelope_sender(AGENCY, "notices@hz.example.cn") is None
    assert policy.check_envelope_sender(AGENCY, "other@hz.example.cn") == replies.SENDER_NOT_AGENCY
    assert policy.check_from_header(CITIZEN, ["a@hz.example.cn", "b@hz.example.cn"]) == replies.FROM_NOT_YOURS
    assert policy.check_from_header(CITIZEN, []) == replies.FROM_NOT_YOURS
    assert policy.check_remote_recipient(None) == replies.RELAY_REFUSED
    assert policy.check_remote_recipient(AGENCY) == replies.AGENCY_REMOTE_REFUSED
    assert policy.check_remote_recipient(CITIZEN) is None
    assert policy.check_notice_types(AGENCY, ["Licence-Renewal"]) is None
    assert policy.check_notice_types(AGENCY, ["pension-statement"]) == replies.NOTICE_TYPE_NOT_GRANTED
    assert policy.check_notice_types(CITIZEN, ["licence-renewal"]) == replies.NOTICE_TYPE_NOT_GRANTED
    assert policy.trusted_value(AGENCY) == "agency=traffic-police"


def test_rate_limiter_refills():
    now = [0.0]
    limiter = policy.RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.allow("ip") for _ in range(60))
    assert not limiter.allow("ip")
    now[0] += 1.0  # one per second comes back
    assert limiter.allow("ip") and not limiter.allow("ip")
    assert limiter.allow("other ip")


def test_every_reply_has_an_enhanced_code():
    texts = [v for k, v in vars(replies).items() if k.isupper() and isinstance(v, str) and v[:1] in "245"]
    for text in texts:
        code, enhanced, _ = text.split(" ", 2)
        assert enhanced[0] == code[0] and enhanced.count(".") == 2, text
    assert replies.normalize("500 Error: (ValueError) secret internals") == "500 5.5.2 Syntax error"
    assert replies.normalize("503 Error: need MAIL command") == "503 5.5.1 Error: need MAIL command"
    assert replies.normalize("354 End data with <CR><LF>.<CR><LF>").startswith("354 End")
    assert replies.normalize("250-SIZE 100") == "250-SIZE 100"


def test_dsn_status_and_backoff():
    assert status_of("451 4.3.0 busy", permanent=False) == "4.3.0"
    assert status_of("550 no such user", permanent=True) == "5.0.0"
    assert [retry_delay(60, n).total_seconds() for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_delay(60, 30) == dt.timedelta(days=1)
    dsn = build_dsn(hostname="mail.x", domain="x", sender="a@x", original=b"Subject: hi\r\n\r\nbody\r\n",
                    failures={"b@y": "550 5.1.1 unknown"}, permanent=True)
    parsed = email.message_from_bytes(dsn, policy=email_policy.default)
    assert not parsed.defects
    status = [p for p in parsed.walk() if p.get_content_type() == "message/delivery-status"][0]
    assert b"Status: 5.1.1" in status.as_bytes()


def test_dkim_ed25519_key_signs_and_verifies(tmp_path):
    import base64

    import dkim
    import nacl.signing

    from mailserver.outbound.signing import DkimSigner

    key = nacl.signing.SigningKey.generate()
    path = tmp_path / "ed.key"
    path.write_bytes(base64.b64encode(bytes(key)))
    signer = DkimSigner.load(path, "ed1", "hz.example.cn", ("hz.example.cn",))
    signed = signer.sign(b"From: a@hz.example.cn\r\nTo: b@x\r\nSubject: s\r\n\r\nbody\r\n", "a@hz.example.cn")
    assert b"a=ed25519-sha256" in signed
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(key.verify_key))
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)

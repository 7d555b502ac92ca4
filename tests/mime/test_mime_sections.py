"""BODY[section] (RFC 3501 6.4.5) on hand-written messages."""
from __future__ import annotations

import email
from email import policy

from mime_samples import BARE_LF, DIGEST, FORWARDED, MISSING, NESTED

from mailserver.mime import analyze, fetch_section


def test_whole_message_header_and_text():
    assert fetch_section(NESTED, (), None) == NESTED
    header = fetch_section(NESTED, (), "HEADER")
    assert header.endswith(b'boundary="outer"\r\n\r\n') and NESTED.startswith(header)
    assert fetch_section(NESTED, (), "TEXT") == NESTED[len(header):]
    assert fetch_section(NESTED, (), "MIME") == b""  # MIME needs a part number


def test_nested_parts_and_their_mime_headers():
    assert fetch_section(NESTED, (1, 1), None) == b"5oKo55qE6am+6am26K+B5bCG5LqO5LiL5pyI5Yiw5pyf44CC"
    assert fetch_section(NESTED, (1, 1), "MIME") == (b"Content-Type: text/plain; charset=utf-8\r\n"
                                                    b"Content-Transfer-Encoding: base64\r\n\r\n")
    alternative = fetch_section(NESTED, (1,), None)
    assert alternative.startswith(b"--inner\r\n") and alternative.endswith(b"--inner--\r\n")
    assert fetch_section(NESTED, (1,), "MIME") == b"Content-Type: multipart/alternative;\r\n boundary=inner\r\n\r\n"
    assert fetch_section(NESTED, (2,), None) == b"JVBERi0xLjQK"
    # sizes in BODYSTRUCTURE are the octets BODY[part] returns
    assert '"BASE64" 12 ' in analyze(NESTED).bodystructure


def test_parts_that_do_not_exist_are_empty():
    for path in ((3,), (0,), (1, 3), (2, 1), (1, 1, 1), (9, 9, 9)):
        assert fetch_section(NESTED, path, None) == b"", path
    assert fetch_section(NESTED, (2,), "HEADER") == b""  # HEADER / TEXT: message/rfc822 parts only


def test_header_fields_case_insensitive_folded_with_blank_line():
    fields = fetch_section(NESTED, (), "HEADER.FIELDS", ("SUBJECT", "content-TYPE", "x-absent"))
    assert fields == (b"Subject: =?UTF-8?B?6am+6am26K+B5o2i6K+B5o+Q6YaS?=\r\n"
                      b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n")
    folded = fetch_section(NESTED, (1,), "MIME")
    assert folded.count(b"\r\n") == 3
    nothing = fetch_section(NESTED, (), "HEADER.FIELDS", ("X-Absent",))
    assert nothing == b"\r\n"


def test_header_fields_not():
    rest = fetch_section(NESTED, (), "HEADER.FIELDS.NOT", ("from", "to", "subject", "date", "message-id"))
    assert rest == b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"


def test_message_rfc822_part_sections():
    inner = fetch_section(FORWARDED, (2,), None)
    assert inner.startswith(b"From: Carol") and inner.endswith(b"Line two.")
    assert fetch_section(FORWARDED, (2,), "HEADER").endswith(b"In-Reply-To: <agenda@example.net>\r\n\r\n")
    assert fetch_section(FORWARDED, (2,), "TEXT") == b"Line one.\r\nLine two."
    assert fetch_section(FORWARDED, (2,), "HEADER.FIELDS", ("subject",)) == b"Subject: minutes\r\n\r\n"
    assert fetch_section(FORWARDED, (2,), "MIME") == b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    # the encapsulated message is not multipart: its part 1 is its body
    assert fetch_section(FORWARDED, (2, 1), None) == b"Line one.\r\nLine two."
    assert fetch_section(FORWARDED, (2, 2), None) == b""
    parsed = email.message_from_bytes(inner, policy=policy.default)
    assert parsed["subject"] == "minutes"
    # part 1 has no header at all: its MIME header is the empty line
    assert fetch_section(FORWARDED, (1,), "MIME") == b"\r\n"
    assert fetch_section(FORWARDED, (1,), None) == b"See below."


def test_non_multipart_message_part_one_is_the_body():
    assert fetch_section(MISSING, (1,), None) == b"Just text, no headers that matter.\r\nSecond line"
    assert fetch_section(MISSING, (1,), "MIME") == b"X-Nothing: here\r\n\r\n"
    assert fetch_section(MISSING, (2,), None) == b""
    assert fetch_section(MISSING, (1, 1), None) == b""


def test_digest_parts_are_messages():
    assert fetch_section(DIGEST, (1,), "HEADER") == b"Subject: one\r\n\r\n"
    assert fetch_section(DIGEST, (1,), "TEXT") == b"first"
    assert fetch_section(DIGEST, (1, 1), None) == b"first"


def test_bare_lf_message_sections_as_stored():
    assert fetch_section(BARE_LF, (), "HEADER") == b"Subject: lf\nContent-Type: multipart/alternative; boundary=z\n\n"
    assert fetch_section(BARE_LF, (1,), None) == b"ab\ncd"
    assert fetch_section(BARE_LF, (1,), "MIME") == b"Content-Type: text/plain\n\n"
    assert fetch_section(BARE_LF, (), "HEADER.FIELDS", ("subject",)) == b"Subject: lf\n\n"


def test_header_only_message():
    raw = b"Subject: no body"
    assert analyze(raw).header_size == len(raw)
    assert fetch_section(raw, (), "HEADER.FIELDS", ("subject",)) == b"Subject: no body\r\n\r\n"
    assert fetch_section(raw, (), "TEXT") == b""


def test_header_fields_keeps_every_occurrence_in_order():
    raw = (b"Received: from a\r\n\tby b\r\nSubject: s\r\nReceived: from c\r\n\r\nbody\r\n")
    assert fetch_section(raw, (), "HEADER.FIELDS", ("received",)) == \
        b"Received: from a\r\n\tby b\r\nReceived: from c\r\n\r\n"
    assert fetch_section(raw, (), "HEADER.FIELDS.NOT", ("received",)) == b"Subject: s\r\n\r\n"

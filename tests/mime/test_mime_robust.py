"""No bytes make analyze or fetch_section raise, and what analyze produces is always valid IMAP
syntax (random bytes, MIME-shaped noise, mutated hand-written and corpus messages)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mime_samples import (BARE_LF, DIGEST, EIGHTBIT, FORWARDED, GB18030, GEN_MBOX, GROUP, MISSING, NESTED,
                          load_corpus)
from mime_wire import check_body, parse

from mailserver.mime import analyze, fetch_section, header_contains, search_matches
from mailserver.mime.envelope import parse_addresses_general, simple_addresses
from mailserver.mime.headers import MAX_FIELDS, scan_header, scan_header_lines

SAMPLES = [NESTED, FORWARDED, GROUP, MISSING, BARE_LF, DIGEST, EIGHTBIT, GB18030]
SECTION_TEXTS = [None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]
#: pieces that steer random input into the parser's interesting corners
FRAGMENTS = [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"--b", b"--b--", b"--outer\r\n", b"--inner--\r\n",
             b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
             b"Content-Type: multipart/digest; boundary=\"b\"\r\n", b"Content-Type: text/html\r\n",
             b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
             b"From: \"a\\\" <b@c>, (x(y)z) g: ;\r\n", b"To: <@a,@b:c@d>\r\n", b" folded\r\n",
             b"Subject: =?gb2312?B?uau7/b3w?= =?utf-8?q?=E4=B8?=\r\n", b"=?x?B?###?=", b"\x00", b"\xff\xfe",
             b"filename*0*=utf-8''%E4; filename*1*=%B8%AD; name*99999999999=x\r\n", b"\"", b"(", b"<", b":"]

settings.register_profile("mime", deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(raw: bytes, paths) -> None:
    analyzed = analyze(raw)
    assert analyzed.size == len(raw) and 0 <= analyzed.header_size <= len(raw)
    assert len(parse(analyzed.envelope)) == 10
    check_body(parse(analyzed.body), extended=False)
    check_body(parse(analyzed.bodystructure), extended=True)
    for stored in (analyzed.envelope, analyzed.body, analyzed.bodystructure, analyzed.search_text):
        assert "\x00" not in stored  # storable in PostgreSQL text
        stored.encode("utf-8")  # and no lone surrogates
    for key in ("subject", "from", "body", "text"):
        search_matches(analyzed.search_text, key, "a")
    header_contains(raw, "subject", "x")
    for path in paths:
        for text in SECTION_TEXTS:
            out = fetch_section(raw, path, text, ("subject", "content-type"))
            assert isinstance(out, bytes)
            if text is None or text in ("HEADER", "TEXT", "MIME"):
                assert out in raw  # sections are the stored bytes, never rewritten


paths_strategy = st.lists(st.lists(st.integers(0, 4), max_size=4).map(tuple), max_size=4)


@settings(settings.get_profile("mime"), max_examples=300)
@given(st.binary(max_size=2000), paths_strategy)
def test_random_bytes(raw, paths):
    check(raw, paths)


@settings(settings.get_profile("mime"), max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=20)), max_size=40), paths_strategy)
def test_mime_shaped_noise(pieces, paths):
    check(b"".join(pieces), paths)


@pytest.fixture(scope="module")
def mutation_seeds(tmp_path_factory) -> list[bytes]:
    """The hand-written samples and, where the generator is present, 40 corpus messages."""
    if not GEN_MBOX.exists():
        return SAMPLES
    return SAMPLES + load_corpus(tmp_path_factory.mktemp("corpus"), 40, 3)


@settings(settings.get_profile("mime"), max_examples=250)
@given(data=st.data(), paths=paths_strategy)
def test_mutated_messages(mutation_seeds, data, paths):
    buf = bytearray(data.draw(st.sampled_from(mutation_seeds)))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(buf)))
        op = data.draw(st.sampled_from(["delete", "insert", "flip", "fragment", "truncate"]))
        if op == "delete":
            del buf[at:at + data.draw(st.integers(1, 40))]
        elif op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=20))
        elif op == "flip" and at < len(buf):
            buf[at] = data.draw(st.integers(0, 255))
        elif op == "fragment":
            buf[at:at] = data.draw(st.sampled_from(FRAGMENTS))
        else:
            del buf[at:]
    check(bytes(buf), paths + [(1,), (1, 1), (2,), (2, 1), (1, 2)])


def test_deep_nesting_is_bounded():
    depth = 5000
    raw = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    raw += b"Content-Type: message/rfc822\r\n\r\n" * depth + b"\r\nend\r\n"
    check(raw, [(1,) * 60])


def test_many_parts_are_bounded():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 20000 + b"--b--\r\n"
    analyzed = analyze(raw)
    assert analyzed.body.count('"TEXT"') <= 2000
    parse(analyzed.bodystructure)


@settings(settings.get_profile("mime"), max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS + [b"X-A: b\r\n", b"\r\n\r\n", b" c\n"]),
                          st.binary(max_size=8)), max_size=30))
def test_header_fast_path_equals_line_walk(pieces):
    raw = b"".join(pieces)
    fast, fast_body = scan_header(raw, 0, len(raw))
    slow, slow_body = scan_header_lines(raw, 0, len(raw))
    assert fast_body == slow_body
    assert [(f.name, f.start, f.end, f.value_start, f.value) for f in fast] == \
        [(f.name, f.start, f.end, f.value_start, f.value) for f in slow]


ADDRESS_PIECES = ["a", "b.c", "@", "<", ">", ",", " ", "  ", "Zoë", "=?utf-8?b?5byg5Lyf?=", "x-y", "_", ".", "\t"]


@settings(settings.get_profile("mime"), max_examples=500)
@given(st.lists(st.sampled_from(ADDRESS_PIECES), max_size=16))
def test_address_fast_path_equals_general_parser(pieces):
    value = "".join(pieces)
    simple = simple_addresses(value)
    if simple is not None:
        assert simple == parse_addresses_general(value)


HOSTILE = {
    "unclosed tags": b"<" * 300_000,
    "unclosed scripts": b"<script>" * 50_000,
    "unclosed comments": b"<!--" * 50_000,
    "unclosed block tags": b"<p" * 150_000,
}


def test_hostile_html_and_headers_stay_linear():
    """Shapes that make a careless regex backtrack quadratically (hours at these sizes); each
    must come back, with the text that is really there (pytest-timeout guards the suite)."""
    for name, markup in HOSTILE.items():
        raw = b"Content-Type: text/html\r\n\r\nfind-me " + markup
        assert search_matches(analyze(raw).search_text, "body", "find-me"), name
    spaced = b"To: a" + b" " * 300_000 + b"b@c\r\nSubject: s\r\n\r\n"
    assert search_matches(analyze(spaced).search_text, "to", "b@c")
    many = b"To: " + b"a@b, " * 50_000 + b"\r\n\r\n"
    assert analyze(many).envelope.count('"a" "b"') == 50_000


def test_a_huge_header_keeps_a_bounded_number_of_fields():
    raw = b"Subject: first\r\n" + b"a:b\r\n c\r\n" * 200_000 + b"\r\nthe body\r\n"
    fields, body_start = scan_header(raw, 0, len(raw))
    assert len(fields) == MAX_FIELDS and fields[0].value == b"first"
    assert raw[body_start:] == b"the body\r\n"
    assert scan_header_lines(raw, 0, len(raw))[1] == body_start
    assert fetch_section(raw, (), "TEXT") == b"the body\r\n"

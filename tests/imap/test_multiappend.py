"""RFC 3502 MULTIAPPEND over a real socket: several messages in one APPEND, stored all or none
(after a quota failure in the middle, a literal too large in the middle, a bad message in the
middle), with APPENDUID naming them all (RFC 4315)."""
from __future__ import annotations

import re

import pytest

from tests.conftest import make_config
from tests.imap.conftest import start_server


def _message(n: int, size: int = 200) -> bytes:
    head = f"From: a@hz.example.cn\r\nSubject: part {n}\r\n\r\n".encode()
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


@pytest.fixture
def quota_server(tmp_path, store_url):
    """The server on both engines, an account quota of 3,000 bytes."""
    from mailserver.provision import prepare

    cfg = make_config(tmp_path / "data", "accounts.quota_bytes=3000", "imap.max_literal_size=2600",
                      store_url=store_url)
    prepare(cfg)
    running = start_server(cfg)
    yield running
    running._stop()  # type: ignore[attr-defined]


def _sync_append(raw, tag: str, parts: list[tuple[str, bytes]]) -> list[bytes]:
    """APPEND INBOX with synchronising literals: each ``(prefix, message)`` after waiting for "+";
    returns the lines after the last literal was sent, up to the tagged reply (or the early
    tagged reply if the server refused a literal)."""
    prefix, data = parts[0]
    raw.send(f"{tag} APPEND INBOX {prefix}{{{len(data)}}}\r\n".encode())
    for i, (_, data) in enumerate(parts):
        answer = raw.line()
        if not answer.startswith(b"+"):
            return [answer]
        tail = b"\r\n" if i == len(parts) - 1 else f" {parts[i + 1][0]}{{{len(parts[i + 1][1])}}}\r\n".encode()
        raw.send(data + tail)
    lines = []
    while not lines or not lines[-1].startswith(tag.encode() + b" "):
        lines.append(raw.line())
    return lines


def _count(raw, tag: str) -> int:
    lines = raw.command(tag, "STATUS INBOX (MESSAGES)")
    return int(re.search(rb"MESSAGES (\d+)", lines[0]).group(1))


def test_multiappend_is_advertised_and_stores_all_with_one_appenduid(quota_server):
    raw = quota_server.raw()
    try:
        assert b" MULTIAPPEND" in raw.command("c", "CAPABILITY")[0]
        lines = _sync_append(raw, "a", [("(\\Seen) ", _message(1)), ("", _message(2)),
                                        ('(\\Flagged) "01-Jan-2024 08:00:00 +0800" ', _message(3))])
        m = re.match(rb"a OK \[APPENDUID (\d+) 1:3\]", lines[-1])
        assert m, lines
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        fetched = raw.command("f", "FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        text = b"".join(fetched)
        assert b"* 1 FETCH (FLAGS (\\Seen \\Recent)" in text and b"* 3 FETCH (FLAGS (\\Flagged \\Recent)" in text
        assert b'INTERNALDATE " 1-Jan-2024 00:00:00 +0000"' in text  # the third's own date, in UTC
        assert [s for s in re.findall(rb"Subject: part (\d)", text)] == [b"1", b"2", b"3"]
    finally:
        raw.close()


def test_a_quota_failure_in_the_middle_stores_none(quota_server):
    """1,000 + 2,500 + 100 bytes against 3,000: the second message passes the quota, so none is
    stored; the first alone still fits afterwards."""
    raw = quota_server.raw()
    try:
        lines = _sync_append(raw, "a", [("", _message(1, 1000)), ("", _message(2, 2500)), ("", _message(3, 100))])
        assert lines[-1].startswith(b"a NO [OVERQUOTA]"), lines
        assert _count(raw, "s") == 0
        assert b"MESSAGES 0" in raw.command("u", "STATUS INBOX (UIDNEXT MESSAGES)")[0]
        lines = _sync_append(raw, "b", [("", _message(1, 1000))])
        assert re.match(rb"b OK \[APPENDUID \d+ 1\]", lines[-1]), lines  # no UID was used up
        assert _count(raw, "t") == 1
    finally:
        raw.close()


def test_a_literal_too_large_in_the_middle_stores_none_and_the_session_goes_on(quota_server):
    raw = quota_server.raw()
    try:
        # the second literal (2,700 > imap.max_literal_size 2,600) is refused before it is sent
        lines = _sync_append(raw, "a", [("", _message(1)), ("", _message(2, 2700)), ("", _message(3))])
        assert lines == [b"a BAD [TOOBIG] literal too large\r\n"], lines
        assert _count(raw, "s") == 0
        # a message that is not a literal in the middle: BAD, none stored
        raw.send(b"b APPEND INBOX {200+}\r\n" + _message(1) + b' (\\Seen) "not a message"\r\n')
        assert raw.line().startswith(b"b BAD")
        # an unknown system flag on the third: BAD, none stored
        raw.send(b"c APPEND INBOX {200+}\r\n" + _message(1) + b" {200+}\r\n" + _message(2)
                 + b" (\\Bogus) {200+}\r\n" + _message(3) + b"\r\n")
        assert raw.line().startswith(b"c BAD")
        # an empty message in the middle (RFC 3502 3): NO, none stored
        raw.send(b"d APPEND INBOX {200+}\r\n" + _message(1) + b" {0+}\r\n\r\n")
        assert raw.line().startswith(b"d NO")
        assert _count(raw, "t") == 0
        assert raw.command("n", "NOOP")[-1] == b"n OK completed\r\n"
    finally:
        raw.close()


def test_a_multiappend_into_the_selected_folder_is_announced_and_recent(quota_server):
    raw = quota_server.raw()
    try:
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        lines = _sync_append(raw, "a", [("", _message(1)), ("", _message(2))])
        assert b"* 2 EXISTS\r\n" in lines and b"* 2 RECENT\r\n" in lines, lines
        assert re.match(rb"a OK \[APPENDUID \d+ 1:2\]", lines[-1]), lines
    finally:
        raw.close()

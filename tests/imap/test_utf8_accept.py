"""RFC 6855 UTF8=ACCEPT over real sockets: after ENABLE UTF8=ACCEPT a session is sent mailbox
names in UTF-8 (LIST, STATUS) and names them in UTF-8 ("&" is an "&"); a session that has not
enabled it (imaplib) keeps modified UTF-7; APPEND ... UTF8 (~{n}) stores the message; SEARCH
takes UTF-8 strings without CHARSET, and CHARSET after ENABLE is BAD."""
from __future__ import annotations

import re

import pytest

from tests.imap.conftest import server_with

CHINESE = "中文"
MUTF7 = b"&Ti1lhw-"
MESSAGE = "From: 张伟 <zhang.wei@hz.example.cn>\r\nSubject: 中文标题\r\n\r\n正文\r\n".encode()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("utf8")) as running:
        yield running


def _enabled(running):
    raw = running.raw()
    lines = raw.command("e", "ENABLE UTF8=ACCEPT")
    assert lines == [b"* ENABLED UTF8=ACCEPT\r\n", lines[-1]] and lines[-1].startswith(b"e OK"), lines
    return raw


def test_utf8_names_after_enable_and_modified_utf7_without(running):
    plain = running.client()
    try:
        assert b" UTF8=ACCEPT" in plain.capability()[1][0]
        assert plain.create(MUTF7.decode())[0] == "OK"
        raw = _enabled(running)
        try:
            listed = b"".join(raw.command("l", 'LIST "" "*"'))
            assert f'* LIST (\\HasNoChildren) "/" "{CHINESE}"\r\n'.encode() in listed, listed
            assert MUTF7 not in listed
            assert raw.command("s", f'SELECT "{CHINESE}"')[-1].startswith(b"s OK")
            status = raw.command("t", f'STATUS "{CHINESE}" (MESSAGES)')
            assert status[0] == f'* STATUS "{CHINESE}" (MESSAGES 0)\r\n'.encode(), status
            # under UTF8=ACCEPT "&" is itself, not the start of modified UTF-7
            assert raw.command("c", 'CREATE "R&D"')[-1].startswith(b"c OK")
            assert b'"R&D"' in b"".join(raw.command("l2", 'LIST "" "R*"'))
            # ENABLE in the selected state does not switch the names of the mailbox open
            assert raw.command("e2", "ENABLE UTF8=ACCEPT")[0] == b"* ENABLED\r\n"
        finally:
            raw.close()
        # the session that did not enable it keeps modified UTF-7, both ways
        typ, data = plain.list('""', "*")
        names = b"\n".join(data)
        assert MUTF7 in names and CHINESE.encode() not in names, names
        assert b'"R&-D"' in names
        assert plain.select(MUTF7.decode())[0] == "OK"
        assert plain.select('"R&-D"')[0] == "OK"
    finally:
        plain.logout()


def test_append_utf8_literal_and_search_without_charset(running):
    raw = _enabled(running)
    try:
        raw.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n")
        reply = raw.line()
        m = re.match(rb"a OK \[APPENDUID \d+ (\d+)\]", reply)
        assert m, reply
        uid = int(m.group(1))
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        raw.send(f"f UID FETCH {uid} BODY.PEEK[]\r\n".encode())
        head = raw.line()
        assert head.endswith(b"{%d}\r\n" % len(MESSAGE)), head
        assert raw.file.read(len(MESSAGE)) == MESSAGE
        assert raw.line() == b")\r\n" and raw.line().startswith(b"f OK")
        found = raw.command("q", 'UID SEARCH SUBJECT "中文标题"')
        assert found[0] == f"* SEARCH {uid}\r\n".encode(), found
        assert raw.command("q2", 'UID SEARCH CHARSET UTF-8 SUBJECT "中文标题"')[-1].startswith(b"q2 BAD")
        assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    finally:
        raw.close()


def test_utf8_append_needs_a_literal8(running):
    raw = running.raw()
    try:
        raw.send(b"a APPEND INBOX UTF8 ({%d+}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n")
        assert raw.line().startswith(b"a BAD")
        assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    finally:
        raw.close()

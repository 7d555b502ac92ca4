"""RFC 4469 CATENATE over a real socket: a message joined from a literal and IMAP URLs to a part,
a whole message and a partial range of messages the user holds (bytes equal to what FETCH
BODY[section] gives); URLs of another user, of a folder or message that does not exist, or with
a stale UIDVALIDITY answered NO [BADURL url] with nothing stored; NO [TOOBIG] past the largest
APPEND; BAD [LIMIT] past imap.max_catenate_parts."""
from __future__ import annotations

import re

import pytest

from tests.imap.conftest import server_with

SOURCE = (b"From: a@hz.example.cn\r\nSubject: source\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
          b"--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
          b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
          b"AAECAwQFBgcICQ==\r\n--XX--\r\n")
HEAD = b"From: b@hz.example.cn\r\nSubject: forward\r\nMIME-Version: 1.0\r\n" \
       b"Content-Type: multipart/mixed; boundary=YY\r\n\r\n--YY\r\n"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("catenate"), "imap.max_literal_size=4000",
                     "imap.max_catenate_parts=6") as running:
        yield running


def _literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def _reply(raw, tag: str) -> list[bytes]:
    lines = []
    while not lines or not lines[-1].startswith(tag.encode() + b" "):
        lines.append(raw.line())
        assert lines[-1], "connection closed"
    return lines


def _append(raw, tag: str, args: bytes) -> list[bytes]:
    raw.send(tag.encode() + b" APPEND " + args + b"\r\n")
    return _reply(raw, tag)


def _count(raw, mailbox: str) -> int:
    return int(re.search(rb"MESSAGES (\d+)", raw.command("st", f"STATUS {mailbox} (MESSAGES)")[0]).group(1))


def _fetch(raw, tag: str, what: str) -> bytes:
    """The literal of a one-item FETCH (``UID FETCH n BODY.PEEK[...]``)."""
    raw.send(f"{tag} {what}\r\n".encode())
    head = raw.line()
    size = int(re.search(rb"\{(\d+)\}\r\n$", head).group(1))
    data = raw.file.read(size)
    rest = _reply(raw, tag)
    assert rest[-1].startswith(tag.encode() + b" OK"), rest
    return data


def _source(running, user: int = 0) -> tuple[int, int]:
    """APPEND SOURCE to the user's INBOX: (UIDVALIDITY, UID)."""
    raw = running.raw(user)
    try:
        lines = _append(raw, "s", b"INBOX " + _literal(SOURCE))
        m = re.match(rb"s OK \[APPENDUID (\d+) (\d+)\]", lines[-1])
        assert m, lines
        return int(m.group(1)), int(m.group(2))
    finally:
        raw.close()


@pytest.fixture
def source(running):
    """A logged-in line client, and the (UIDVALIDITY, UID) of SOURCE in its user's INBOX."""
    validity, uid = _source(running)
    raw = running.raw()
    yield raw, validity, uid
    raw.close()


def test_catenate_joins_a_literal_and_url_parts_as_fetch_gives_them(source):
    raw, validity, uid = source
    assert b" CATENATE" in raw.command("c", "CAPABILITY")[0]
    assert raw.command("sel", "SELECT INBOX")[-1].startswith(b"sel OK")
    part1 = _fetch(raw, "f1", f"UID FETCH {uid} BODY.PEEK[1]")
    mime2 = _fetch(raw, "f2", f"UID FETCH {uid} BODY.PEEK[2.MIME]")
    whole = _fetch(raw, "f3", f"UID FETCH {uid} BODY.PEEK[]")
    assert part1 == b"first part" and whole == SOURCE
    url = f"/INBOX;UIDVALIDITY={validity}/;UID={uid}"
    lines = _append(raw, "a", b"Drafts (\\Draft) CATENATE (TEXT " + _literal(HEAD)
                    + f' URL "{url}/;SECTION=1" TEXT '.encode() + _literal(b"\r\n--YY\r\n")
                    # relative to the selected mailbox, and a partial range of the whole message
                    + f' URL ";UID={uid}/;SECTION=2.MIME" URL "{url}/;PARTIAL=0.4"'.encode()
                    + b" TEXT " + _literal(b"\r\n--YY--\r\n") + b")")
    m = re.match(rb"a OK \[APPENDUID (\d+) (\d+)\]", lines[-1])
    assert m, lines
    assert raw.command("s2", "SELECT Drafts")[-1].startswith(b"s2 OK")
    built = _fetch(raw, "g", f"UID FETCH {int(m.group(2))} BODY.PEEK[]")
    assert built == HEAD + part1 + b"\r\n--YY\r\n" + mime2 + whole[:4] + b"\r\n--YY--\r\n"
    flags = raw.command("h", f"UID FETCH {int(m.group(2))} FLAGS")[0]
    assert b"\\Draft" in flags


@pytest.mark.parametrize("url", [
    "imap://{other}@mail.hz.example.cn/INBOX;UIDVALIDITY={ov}/;UID={ouid}",  # another user's message
    "imap://mail.hz.example.cn/INBOX/;UID={uid}",  # anonymous
    "/NoSuchFolder/;UID={uid}",
    "/INBOX;UIDVALIDITY={badv}/;UID={uid}",
    "/INBOX/;UID={baduid}",
    "/INBOX/;UID={uid}/;SECTION=9",  # a part the message does not have
    "/INBOX/;UID={uid}/;URLAUTH=anonymous:internal:91354a473744909de610943775f92038",
    ";UID={uid}",  # relative, and no mailbox is selected
])
def test_a_bad_url_is_badurl_and_nothing_is_stored(running, source, url):
    raw, validity, uid = source
    other_validity, other_uid = _source(running, 1)
    url = url.format(other=running.users[1][0], ov=other_validity, ouid=other_uid, uid=uid, badv=validity + 1,
                     baduid=uid + 1000)
    before = _count(raw, "Drafts")
    lines = _append(raw, "a", b"Drafts CATENATE (TEXT " + _literal(HEAD) + f' URL "{url}")'.encode())
    assert lines[-1].startswith(b"a NO [BADURL " + url.encode() + b"]"), lines
    assert _count(raw, "Drafts") == before
    assert raw.command("n", "NOOP")[-1].startswith(b"n OK")  # the session goes on


def test_past_the_largest_append_is_toobig_and_too_many_parts_is_limit(source):
    raw, validity, uid = source
    before = _count(raw, "Drafts")
    url = f' URL "/INBOX;UIDVALIDITY={validity}/;UID={uid}"'.encode()
    # 3 x the source (~330 bytes) and a 3,500-byte literal pass imap.max_literal_size (4,000)
    lines = _append(raw, "a", b"Drafts CATENATE (" + url * 3 + b" TEXT " + _literal(b"x" * 3500) + b")")
    assert lines[-1].startswith(b"a NO [TOOBIG]"), lines
    lines = _append(raw, "b", b"Drafts CATENATE (" + url * 7 + b")")
    assert lines[-1].startswith(b"b BAD [LIMIT]"), lines
    assert _count(raw, "Drafts") == before
    lines = _append(raw, "c", b"Drafts CATENATE (" + url * 4 + b")")  # within both: stored
    assert lines[-1].startswith(b"c OK [APPENDUID"), lines
    assert _count(raw, "Drafts") == before + 1

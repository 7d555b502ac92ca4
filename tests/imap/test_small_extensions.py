"""PREVIEW (RFC 8970), OBJECTID (RFC 8474), SAVEDATE (RFC 8514) and CREATE-SPECIAL-USE (RFC 6154),
over real sockets."""
from __future__ import annotations

import datetime as dt
import imaplib
import re
from email.message import EmailMessage

import pytest
from sqlalchemy import text

from mailserver.store.mailstore import deliver

LONG = "杭州市税务局提醒您：" + "您的个人所得税年度汇算已经开始，请于六月三十日前登录办理。" * 12


def _notice() -> bytes:
    msg = EmailMessage()
    msg["From"] = "notice@tax.hz.example.cn"
    msg["To"] = "citizen@hz.example.cn"
    msg["Subject"] = "个人所得税年度汇算提醒"
    msg.set_content(LONG + "\n> 引用的旧邮件\n-- \n杭州市税务局\n")
    msg.add_alternative(f"<html><body><p><b>{LONG}</b></p></body></html>", subtype="html")
    return msg.as_bytes()


def _deliver(server, raw: bytes) -> None:
    deliver(server.ctx.store, raw, [server.users[0][1]])


def _capabilities(c) -> set[str]:
    typ, data = c.capability()  # after login (imaplib keeps the list it had before)
    return set(data[0].decode().split())


def _fetch(c, uid: str, items: str) -> bytes:
    typ, data = c.uid("FETCH", uid, items)
    assert typ == "OK", data
    return b"".join(d if isinstance(d, bytes) else b"".join(d) for d in data)


def test_preview_of_a_chinese_notice(server):
    _deliver(server, _notice())
    c = server.client()
    try:
        assert "PREVIEW" in _capabilities(c)
        c.select("INBOX")
        typ, data = c.uid("FETCH", "1", "(PREVIEW)")
        assert typ == "OK"
        preview = data[0][1].decode("utf-8")
        assert len(preview) == 256  # RFC 8970 3.1: at most 256 characters, and the notice is longer
        assert preview == " ".join(LONG.split())[:256]  # the text part: no tags, no quote, no signature
        assert "<" not in preview and "引用" not in preview
        typ, data = c.uid("FETCH", "1", "(PREVIEW (LAZY))")
        assert typ == "OK" and data[0][1].decode("utf-8") == preview  # cached at delivery
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):  # RFC 8970: LAZY is the only modifier
            c.uid("FETCH", "1", "(PREVIEW (EAGER))")
        assert c.noop()[0] == "OK"
    finally:
        c.logout()


def test_preview_of_html_only_and_of_content_stored_before_previews(server):
    _deliver(server, "Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                     "<html><head><style>p {color: red}</style></head><p>市民&amp;您好</p></html>\r\n".encode())
    with server.ctx.store.session() as s:
        s.execute(text("UPDATE content SET preview = NULL"))  # as migration 0011 leaves old content
    c = server.client()
    try:
        c.select("INBOX")
        assert b"PREVIEW NIL" in _fetch(c, "1", "(PREVIEW (LAZY))")  # RFC 8970 3.2: not cached, LAZY: NIL
        typ, data = c.uid("FETCH", "1", "(PREVIEW)")
        assert typ == "OK" and data[0][1].decode("utf-8") == "市民&您好"  # made now, on the heavy lane
    finally:
        c.logout()


@pytest.fixture
def raw(server):
    client = server.raw()
    yield client
    client.close()


def _mailboxid(lines: bytes) -> str:
    m = re.search(rb"MAILBOXID \(([A-Za-z0-9_-]+)\)", lines)
    assert m, lines
    return m.group(1).decode()


def test_objectid_mailboxid_emailid_threadid(server):
    _deliver(server, _notice())
    raw = server.raw()
    try:
        assert b"OBJECTID" in raw.command("a", "CAPABILITY")[0]
        created = raw.command("b", "CREATE Tax")
        assert created[-1].startswith(b"b OK [MAILBOXID (")
        tax_id = _mailboxid(created[-1])
        status = b"".join(raw.command("c", "STATUS Tax (MAILBOXID MESSAGES)"))
        assert _mailboxid(status) == tax_id
        inbox_id = _mailboxid(b"".join(raw.command("d", "SELECT INBOX")))
        assert inbox_id != tax_id
        fetched = b"".join(raw.command("e", "UID FETCH 1 (EMAILID THREADID)"))
        emailid = re.search(rb"EMAILID \(([A-Za-z0-9_-]+)\)", fetched).group(1)
        assert b"THREADID NIL" in fetched  # RFC 8474 5.2: threads are not computed
        assert raw.command("f", "UID COPY 1 Tax")[-1].startswith(b"f OK")
        assert raw.command("g", "UID MOVE 1 Archive")[-1].startswith(b"g OK")
        for box in ("Tax", "Archive"):  # the same content: the same EMAILID wherever it went
            raw.command("h", f"SELECT {box}")
            assert re.search(rb"EMAILID \(([A-Za-z0-9_-]+)\)", b"".join(raw.command("i", "FETCH 1 (EMAILID)"))
                             ).group(1) == emailid
        _deliver(server, b"Subject: another\r\n\r\nbody\r\n")
        raw.command("j", "SELECT INBOX")
        other = b"".join(raw.command("k", "FETCH 1 (EMAILID)"))
        assert emailid not in other and b"EMAILID (" in other
        assert raw.command("l", "RENAME Tax Steuer/Tax")[-1].startswith(b"l OK")
        assert _mailboxid(b"".join(raw.command("m", "STATUS Steuer/Tax (MAILBOXID)"))) == tax_id
        assert _mailboxid(b"".join(raw.command("n", "SELECT Steuer/Tax"))) == tax_id
        assert raw.command("o", "DELETE Steuer/Tax")[-1].startswith(b"o OK")
        assert _mailboxid(raw.command("p", "CREATE Steuer/Tax")[-1]) != tax_id  # a new folder, a new id
    finally:
        raw.close()


def test_savedate_fetch_and_search(server, raw):
    assert b"SAVEDATE" in raw.command("a", "CAPABILITY")[0]
    msg = b"Subject: saved\r\n\r\nbody\r\n"
    raw.send(b'b APPEND INBOX "01-Jan-2020 10:00:00 +0000" {%d+}\r\n' % len(msg) + msg + b"\r\n")
    assert raw.line().startswith(b"b OK")
    raw.command("c", "SELECT INBOX")
    fetched = b"".join(raw.command("d", "UID FETCH 1 (INTERNALDATE SAVEDATE)"))
    today = dt.datetime.now(dt.timezone.utc)
    assert b'INTERNALDATE " 1-Jan-2020 10:00:00 +0000"' in fetched
    assert f'SAVEDATE "{today.day:2d}-{today:%b}-{today.year}'.encode() in fetched
    day = f"{today.day}-{today:%b}-{today.year}"
    assert raw.command("e", f"UID SEARCH SAVEDON {day}")[0] == b"* SEARCH 1\r\n"
    assert raw.command("f", f"UID SEARCH SAVEDSINCE {day}")[0] == b"* SEARCH 1\r\n"
    assert raw.command("g", f"UID SEARCH SAVEDBEFORE {day}")[0] == b"* SEARCH\r\n"
    assert raw.command("h", "UID SEARCH SAVEDBEFORE 1-Jan-2021")[0] == b"* SEARCH\r\n"
    assert raw.command("i", "UID SEARCH BEFORE 1-Jan-2021")[0] == b"* SEARCH 1\r\n"  # INTERNALDATE
    assert raw.command("j", "UID SEARCH SAVEDATESUPPORTED")[0] == b"* SEARCH 1\r\n"
    # COPY saves anew: the copy's SAVEDATE is now, the original keeps its own
    with server.ctx.store.session() as s:
        s.execute(text("UPDATE message SET savedate = internaldate"))
    assert raw.command("k", "UID SEARCH SAVEDBEFORE 1-Jan-2021")[0] == b"* SEARCH 1\r\n"
    assert raw.command("l", "UID COPY 1 Archive")[-1].startswith(b"l OK")
    raw.command("m", "SELECT Archive")
    assert raw.command("n", f"UID SEARCH SAVEDON {day}")[0] == b"* SEARCH 1\r\n"
    assert raw.command("o", "UID SEARCH SAVEDBEFORE notadate")[-1].startswith(b"o BAD")


def test_create_special_use(server, raw):
    assert b"CREATE-SPECIAL-USE" in raw.command("a", "CAPABILITY")[0]
    assert raw.command("b", "CREATE Old/2025 (USE (\\Archive))")[-1].startswith(b"b OK")
    listed = b"".join(raw.command("c", 'LIST "" Old/2025'))
    assert b"\\Archive" in listed
    refused = raw.command("d", "CREATE Other (USE (\\Important))")[-1]
    assert refused.startswith(b"d NO [USEATTR]")
    assert raw.command("e", "CREATE Virtual (USE (\\All))")[-1].startswith(b"e NO [USEATTR]")
    assert raw.command("f", "CREATE Two (USE (\\Sent \\Trash))")[-1].startswith(b"f NO [USEATTR]")
    assert b"Other" not in b"".join(raw.command("g", 'LIST "" *'))  # refused: not created
    assert raw.command("h", "CREATE Bad (USES (\\Archive))")[-1].startswith(b"h BAD")
    assert raw.command("i", "NOOP")[-1].startswith(b"i OK")  # the session goes on
    # the extra \Archive may go; the account's last one stays
    assert raw.command("j", "DELETE Old/2025")[-1].startswith(b"j OK")
    assert raw.command("k", "DELETE Archive")[-1].startswith(b"k NO")

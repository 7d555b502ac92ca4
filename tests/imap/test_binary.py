"""RFC 3516 BINARY over real sockets: FETCH BINARY[part] / BINARY.PEEK / BINARY.SIZE decode base64
and quoted-printable parts (a base64 attachment with a Chinese file name comes back byte for byte),
an unknown transfer encoding is NO [UNKNOWN-CTE], and APPEND takes literal8 (``~{n}``): parts that
carry NUL are stored re-encoded as base64 (RFC 3516 4.4 lets the server convert), so BINARY gives
back the original octets and BODY[] never carries a NUL."""
from __future__ import annotations

import imaplib
import re
from email.message import EmailMessage

from tests.imap.conftest import server_with

ATTACHMENT = bytes(range(256)) * 8 + "二〇二四年度水费".encode("gb18030")
FILE_NAME = "二〇二四年度缴费通知书.pdf"


def _notice() -> bytes:
    msg = EmailMessage()
    msg["From"] = "water@hz.example.cn"
    msg["To"] = "citizen@hz.example.cn"
    msg["Subject"] = "缴费通知"
    msg.set_content("您好：本期水费 42.50 元。请于月底前缴纳。\n" * 3, cte="quoted-printable")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename=FILE_NAME)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _fetch(client: imaplib.IMAP4, items: str) -> list:
    typ, data = client.fetch("1", items)
    assert typ == "OK", data
    return data


def test_binary_decodes_a_base64_attachment_with_a_chinese_file_name(server):
    raw = _notice()
    assert FILE_NAME.encode() not in raw  # the name travels RFC 2231-encoded
    client = server.client()
    try:
        assert b"BINARY" in client.capability()[1][0].split()
        assert client.append("INBOX", None, None, raw)[0] == "OK"
        client.select("INBOX")
        bodystructure = _fetch(client, "(BODYSTRUCTURE)")[0]
        assert b'"BASE64"' in bodystructure and b'"QUOTED-PRINTABLE"' in bodystructure
        data = _fetch(client, "(BINARY.PEEK[2] BINARY.SIZE[2])")
        head, body = data[0]
        assert body == ATTACHMENT
        assert re.search(rb"BINARY.SIZE\[2\] (\d+)", data[1] + head).group(1) == str(len(ATTACHMENT)).encode()
        assert head.startswith(b"1 (BINARY[2] ~{%d}" % len(ATTACHMENT))  # NUL inside: a literal8
        # the quoted-printable text part decodes to its UTF-8 octets (no NUL: a plain literal)
        text = _fetch(client, "(BINARY.PEEK[1])")[0]
        assert text[0].endswith(b"BINARY[1] {%d}" % len(text[1]))
        assert text[1].decode("utf-8") == "您好：本期水费 42.50 元。请于月底前缴纳。\r\n" * 3  # lines as on the wire
        # partial: the origin is echoed, the octets are of the decoded part
        part = _fetch(client, "(BINARY.PEEK[2]<256.16>)")[0]
        assert b"BINARY[2]<256> ~{16}" in part[0] and part[1] == ATTACHMENT[256:272]
        # PEEK left \Seen alone; BINARY sets it
        assert b"\\Seen" not in _fetch(client, "(FLAGS)")[0]
        _fetch(client, "(BINARY[1])")
        assert b"\\Seen" in _fetch(client, "(FLAGS)")[0]
        # a part that is not there is empty, as BODY[part] is; a bad section is BAD
        assert _fetch(client, "(BINARY.SIZE[9])")[0].endswith(b"BINARY.SIZE[9] 0)")
        for bad in ("(BINARY[1.HEADER])", "(BINARY.SIZE[1]<0.5>)", "(BINARY[0])"):
            try:
                client.fetch("1", bad)
                raise AssertionError(f"{bad} accepted")
            except imaplib.IMAP4.error as exc:
                assert "BAD" in str(exc) or "syntax" in str(exc), exc
    finally:
        client.logout()


def test_an_unknown_transfer_encoding_is_no_unknown_cte_and_the_session_goes_on(server):
    raw = (b"From: a@hz.example.cn\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n")
    client = server.client()
    try:
        assert client.append("INBOX", None, None, raw)[0] == "OK"
        client.select("INBOX")
        typ, data = client.fetch("1", "(BINARY.PEEK[1])")
        assert typ == "NO" and data[-1].startswith(b"[UNKNOWN-CTE]"), (typ, data)
        typ, data = client.fetch("1", "(BINARY.SIZE[1])")
        assert typ == "NO" and data[-1].startswith(b"[UNKNOWN-CTE]"), (typ, data)
        assert _fetch(client, "(BINARY.PEEK[2])")[0][1] == b"plain"
        assert client.noop()[0] == "OK"
    finally:
        client.logout()


def _append8(raw_client, tag: str, message: bytes) -> list[bytes]:
    raw_client.send(f"{tag} APPEND INBOX ~{{{len(message)}}}\r\n".encode())
    answer = raw_client.line()
    if not answer.startswith(b"+"):
        return [answer]
    raw_client.send(message + b"\r\n")
    lines = [raw_client.line()]
    while not lines[-1].startswith(tag.encode() + b" "):
        lines.append(raw_client.line())
    return lines


def test_append_of_a_literal8_with_nul_stores_it_as_base64_and_binary_gives_it_back(server):
    payload = b"\x00\x01binary\x00\r\nwith NUL\x00\xff" * 50
    message = (b"From: a@hz.example.cn\r\nSubject: nul\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
               b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xe4\xbd\xa0\xe5\xa5\xbd\r\n"
               b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
               + payload + b"\r\n--b--\r\n")
    raw = server.raw()
    try:
        lines = _append8(raw, "a", message)
        assert re.match(rb"a OK \[APPENDUID \d+ 1\]", lines[-1]), lines
        # a literal8 without NUL is stored as sent
        plain = b"Subject: plain\r\n\r\n8-bit \xe4\xbd\xa0\xe5\xa5\xbd\r\n"
        assert _append8(raw, "b", plain)[-1].startswith(b"b OK")
        # NUL in a header: no transfer encoding can carry it (RFC 5530 PARSE), nothing stored
        assert _append8(raw, "c", b"Subject: a\x00b\r\n\r\nbody\r\n")[-1].startswith(b"c NO [PARSE]")
        assert b"* 2 EXISTS\r\n" in raw.command("s", "SELECT INBOX")
    finally:
        raw.close()
    client = server.client()
    try:
        client.select("INBOX")
        whole = _fetch(client, "(BODY.PEEK[])")[0][1]
        assert b"\x00" not in whole and b"Content-Transfer-Encoding: base64\r\n" in whole
        assert b"Content-Transfer-Encoding: binary" not in whole
        assert _fetch(client, "(BINARY.PEEK[2])")[0][1] == payload
        assert _fetch(client, "(BINARY.PEEK[1])")[0][1] == "你好".encode()
        typ, data = client.fetch("2", "(BODY.PEEK[])")
        assert data[0][1] == plain
    finally:
        client.logout()


def test_a_literal8_goes_through_the_literal_limits(tmp_path):
    with server_with(tmp_path, "imap.max_literal_size=1000") as running:
        raw = running.raw()
        try:
            assert _append8(raw, "a", b"Subject: big\r\n\r\n" + b"\x00" * 1200) == [
                b"a BAD [TOOBIG] literal too large\r\n"]
            raw.send(b"b APPEND INBOX ~{1200+}\r\n")  # non-synchronising: would arrive anyway
            assert raw.line().startswith(b"* BYE")
        finally:
            raw.close()

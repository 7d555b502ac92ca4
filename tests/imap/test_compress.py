"""COMPRESS=DEFLATE (RFC 4978) over real sockets, plain and TLS: imaplib taught to compress
(``DeflateIMAP4``) and a raw DEFLATE client (``Deflating``) for exact bytes, literals, IDLE, the
errors and the limits; the decompressing reader's memory bound is checked on its own too."""
from __future__ import annotations

import asyncio
import imaplib
import re
import socket
import ssl
import zlib

from mailserver.imap.compress import InflatingReader
from mailserver.imap.framing import read_line
from mailserver.store.mailstore import deliver

from .conftest import PASSWORD
from .test_protocol import notice


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# imaplib knows no COMPRESS (it refuses commands it has no state entry for)
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))


class DeflateIMAP4(imaplib.IMAP4):
    """imaplib with COMPRESS DEFLATE: ``compress()``, then its send/read/readline go through zlib."""

    _deflate = None

    def compress(self) -> str:
        typ, _ = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._inflate = zlib.decompressobj(-15)
            self._inbuf = bytearray()
            self._wire_in = 0
        return typ

    def send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("socket closed")
        self._wire_in += len(chunk)
        self._inbuf += self._inflate.decompress(chunk)

    def read(self, size: int) -> bytes:
        if self._deflate is None:
            return super().read(size)
        while len(self._inbuf) < size:
            self._more()
        data = bytes(self._inbuf[:size])
        del self._inbuf[:size]
        return data

    def readline(self) -> bytes:
        if self._deflate is None:
            return super().readline()
        while b"\n" not in self._inbuf:
            self._more()
        i = self._inbuf.index(b"\n") + 1
        data = bytes(self._inbuf[:i])
        del self._inbuf[:i]
        return data


class Deflating:
    """A raw client that can switch to raw DEFLATE (wbits=-15, Z_SYNC_FLUSH) in both directions."""

    def __init__(self, port: int, tls: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if tls:
            self.sock = _tls_context().wrap_socket(self.sock)
        self.buf = bytearray()
        self.deflate = self.inflate = None
        self.sent_wire = self.received_wire = 0
        self.greeting = self.line()

    def starttls(self) -> None:
        assert not self.buf
        self.sock = _tls_context().wrap_socket(self.sock)

    def start(self) -> None:
        """Compression is on from here (after the tagged OK): what was read past it is compressed."""
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        pending = bytes(self.buf)
        self.buf = bytearray(self.inflate.decompress(pending))

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sent_wire += len(data)
        self.sock.sendall(data)

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.received_wire += len(chunk)
        self.buf += self.inflate.decompress(chunk) if self.inflate is not None else chunk
        return True

    def line(self) -> bytes:
        """One line with its CRLF; what is left (maybe b"") when the server closed."""
        while b"\n" not in self.buf:
            if not self._more():
                rest = bytes(self.buf)
                self.buf.clear()
                return rest
        i = self.buf.index(b"\n") + 1
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._more(), "server closed"
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self) -> bytes:
        """One response with its literals inline."""
        out = self.line()
        while (m := re.search(rb"\{(\d+)\}\r\n$", out)):
            out += self.read(int(m.group(1))) + self.line()
        return out

    def command(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}\r\n".encode())
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            r = self.response()
            lines.append(r)
            if r.startswith(tag.encode() + b" ") or not r:
                return lines

    def login(self, server, user: int = 0) -> None:
        assert self.command("l", f'LOGIN "{server.users[user][0]}" "{PASSWORD}"')[-1].startswith(b"l OK")

    def compress(self) -> None:
        self.send(b"z COMPRESS DEFLATE\r\n")
        assert self.line() == b"z OK DEFLATE active\r\n"
        self.start()

    def closed(self) -> bool:
        try:
            return not self._more()
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _caps(lines: list[bytes]) -> list[bytes]:
    return next(x for x in lines if x.startswith(b"* CAPABILITY")).split()


def _body_literal(lines: list[bytes]) -> bytes:
    for r in lines:
        m = re.search(rb"BODY\[\] \{(\d+)\}\r\n", r)
        if m:
            return r[m.end():m.end() + int(m.group(1))]
    raise AssertionError(f"no BODY[] in {lines[:3]}")


def test_compress_deflate_is_advertised_only_after_login(server):
    c = Deflating(server.port)
    assert b"COMPRESS=DEFLATE" not in c.greeting
    assert b"COMPRESS=DEFLATE" not in _caps(c.command("c", "CAPABILITY"))
    assert c.command("z", "COMPRESS DEFLATE")[-1].startswith(b"z BAD")  # not allowed before login
    ok = c.command("l", f'LOGIN "{server.users[0][0]}" "{PASSWORD}"')[-1]
    assert ok.startswith(b"l OK [CAPABILITY ") and b" COMPRESS=DEFLATE" in ok
    assert b"COMPRESS=DEFLATE" in _caps(c.command("c", "CAPABILITY"))
    c.close()


def test_imaplib_select_fetch_append_idle_logout_through_deflate(server):
    raw = notice("关于2026年度居住证签注的通知", "请于十二月底前携带身份证到街道办理居住证签注。" * 40)
    deliver(server.ctx.store, raw, [server.users[0][1]])
    c = DeflateIMAP4("127.0.0.1", server.port, timeout=30)
    assert c.login(server.users[0][0], PASSWORD)[0] == "OK"
    assert c.compress() == "OK"
    assert c.select("INBOX") == ("OK", [b"1"])
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == raw  # byte for byte what was delivered
    assert c._wire_in < len(raw)  # and it travelled compressed
    # APPEND with a synchronising literal: imaplib waits for "+" (sent compressed) first
    second = notice("第二封：社保缴费基数调整", "自2027年1月起，社保缴费基数按新标准执行。")
    typ, data = c.append("INBOX", "(\\Seen)", None, second)
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = c.fetch("2", "(FLAGS BODY.PEEK[])")
    assert data[0][1] == second and b"\\Seen" in data[0][0]
    # IDLE, told of a delivery from the store
    tag = c._new_tag().decode()
    c.send(f"{tag} IDLE\r\n".encode())
    assert c.readline().startswith(b"+ ")
    deliver(server.ctx.store, notice("第三封"), [server.users[0][1]])
    c.sock.settimeout(10)
    assert c.readline() == b"* 3 EXISTS\r\n"
    assert c.readline() == b"* 3 RECENT\r\n"  # all three arrived while this session had INBOX
    c.send(b"DONE\r\n")
    assert c.readline() == f"{tag} OK IDLE terminated\r\n".encode()
    assert c.logout()[0] == "BYE"


def test_literals_sync_and_nonsync_and_large_append_and_fetch(server):
    c = Deflating(server.port)
    c.login(server)
    c.compress()
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    small = notice("交通违法处理通知")
    c.send(b"a1 APPEND INBOX (\\Flagged) {%d}\r\n" % len(small))
    assert c.line() == b"+ Ready\r\n"
    c.send(small + b"\r\n")
    assert c.until("a1")[-1].startswith(b"a1 OK [APPENDUID ")
    # LITERAL+: no continuation; and a large message (about 3 MiB, over the server's 256 KiB
    # write batch, so FETCH is compressed in several flushes)
    big = notice("年度体检报告", "体检结果：各项指标正常。\n" * 120000)
    assert len(big) > 3_000_000
    before = c.sent_wire
    c.send(b"a2 APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    assert c.sent_wire - before < len(big) // 10  # it went compressed
    lines = c.until("a2")
    assert not any(x.startswith(b"+") for x in lines) and lines[-1].startswith(b"a2 OK [APPENDUID ")
    got = c.command("f", "FETCH 1:2 (FLAGS BODY.PEEK[])")
    assert got[-1] == b"f OK completed\r\n"
    assert _body_literal(got[:1]) == small and b"\\Flagged" in got[0]
    assert _body_literal(got[1:2]) == big
    assert c.command("o", "LOGOUT")[-2:] == [b"* BYE civicmail logging out\r\n", b"o OK completed\r\n"]
    assert c.closed()


def test_compress_twice_is_no_compressionactive_and_bad_mechanism_is_bad(server):
    c = Deflating(server.port)
    c.login(server)
    assert c.command("x", "COMPRESS LZ4") == [b"x BAD unsupported compression mechanism (DEFLATE is)\r\n"]
    assert c.command("y", "COMPRESS")[-1].startswith(b"y BAD")
    assert c.command("n", "NOOP") == [b"n OK completed\r\n"]  # still uncompressed
    c.compress()
    assert c.command("z2", "COMPRESS DEFLATE") == [b"z2 NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n"]
    assert c.command("n", "NOOP") == [b"n OK completed\r\n"]  # and still compressed
    c.close()


def test_commands_pipelined_after_compress_get_bye(server):
    c = Deflating(server.port)
    c.login(server)
    c.send(b"z COMPRESS DEFLATE\r\nn NOOP\r\n")  # the client must wait for the OK
    assert c.line() == b"z OK DEFLATE active\r\n"
    c.start()
    assert c.line() == b"* BYE commands sent before COMPRESS was answered, closing\r\n"
    assert c.closed()
    other = Deflating(server.port)
    other.login(server)
    assert other.command("n", "NOOP") == [b"n OK completed\r\n"]


def test_over_implicit_tls_and_after_starttls(server):
    raw = notice("护照办理进度", "您的护照已制作完成，请到出入境窗口领取。")
    deliver(server.ctx.store, raw, [server.users[1][1]])
    c = Deflating(server.tls_port, tls=True)
    c.login(server, 1)
    c.compress()
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
    assert _body_literal(c.command("f", "FETCH 1 BODY.PEEK[]")) == raw
    assert c.command("o", "LOGOUT")[-1] == b"o OK completed\r\n"
    c.close()
    d = Deflating(server.port)
    assert d.command("t", "STARTTLS") == [b"t OK begin TLS negotiation now\r\n"]
    d.starttls()
    d.login(server, 1)
    d.compress()
    assert d.command("s", "SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
    assert _body_literal(d.command("f", "FETCH 1 BODY.PEEK[]")) == raw
    assert d.command("o", "LOGOUT")[-1] == b"o OK completed\r\n"
    d.close()


def test_compressed_bombs_meet_the_same_limits_and_the_server_stays_up(server):
    c = Deflating(server.port)
    c.login(server)
    c.compress()
    # a line of 50 MB (about 50 KB compressed): BAD as the plain over-long line, session goes on
    before = c.sent_wire
    c.send(b"b NOOP " + b"x" * 50_000_000 + b"\r\n")
    assert c.sent_wire - before < 200_000
    assert c.line() == b"* BAD line too long\r\n"
    assert c.command("n", "NOOP") == [b"n OK completed\r\n"]
    # a synchronising literal over imap.max_literal_size: BAD [TOOBIG], nothing read
    assert c.command("a", "APPEND INBOX {999999999999}") == [b"a BAD [TOOBIG] literal too large\r\n"]
    assert c.command("n2", "NOOP") == [b"n2 OK completed\r\n"]
    # a non-synchronising one would arrive anyway: BYE and closed, as uncompressed
    c.send(b"a2 APPEND INBOX {999999999999+}\r\n")
    assert c.line() == b"* BYE literal too large, closing\r\n"
    assert c.closed()
    # garbage that is not DEFLATE closes that session only
    g = Deflating(server.port)
    g.login(server)
    g.compress()
    g.sock.sendall(b"\xff" * 64)
    assert g.closed()
    other = DeflateIMAP4("127.0.0.1", server.port, timeout=30)
    other.login(server.users[1][0], PASSWORD)
    assert other.compress() == "OK" and other.noop()[0] == "OK"
    other.logout()


def test_inflating_reader_stays_bounded_on_a_bomb():
    """The reader alone: a 200 MB line inflates in bounded steps and is thrown away; the line
    after it is read whole; at no time does the buffer hold more than limit + one step."""
    limit = 65538
    seen: list[int] = []

    class Watched(InflatingReader):
        async def _fill(self, want: int) -> None:
            await super()._fill(want)
            seen.append(len(self._buffer))

    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    wire = comp.compress(b"x" * 200_000_000 + b"\r\nb NOOP\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(wire) < 250_000

    async def run():
        raw = asyncio.StreamReader(limit=limit)
        raw.feed_data(wire)
        raw.feed_eof()
        reader = Watched(raw, limit)
        assert await read_line(reader, limit - 2) is None
        assert await read_line(reader, limit - 2) == b"b NOOP\r\n"
        try:
            await read_line(reader, limit - 2)
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return "no end"

    assert asyncio.run(run()) == "Closed"
    assert len(seen) > 200_000_000 // (limit + 1)
    assert max(seen) <= limit + 1


def test_sessions_that_never_compress_have_no_compressor(server):
    c = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    c.login(server.users[0][0], PASSWORD)
    c.noop()
    sessions = list(server.imap.sessions)
    assert sessions and all(s._deflate is None and not s.compressed for s in sessions)
    assert all(type(s.reader) is asyncio.StreamReader for s in sessions)
    d = DeflateIMAP4("127.0.0.1", server.port, timeout=30)
    d.login(server.users[0][0], PASSWORD)
    d.compress()
    d.noop()
    assert sum(1 for s in server.imap.sessions if s.compressed) == 1
    c.logout()
    d.logout()

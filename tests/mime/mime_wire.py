"""Read back IMAP wire syntax (what ENVELOPE / BODYSTRUCTURE strings hold) into Python values:
lists for parenthesised lists, None for NIL, str for strings and atoms, int for numbers."""
from __future__ import annotations

import re

NUMBER = re.compile(rb"\d+")
ATOM = re.compile(rb"[^\s()\"{]+")


def parse(text: str):
    data = text.encode("utf-8")
    value, pos = _value(data, 0)
    assert pos == len(data), f"trailing bytes at {pos}: {data[pos:pos + 40]!r}"
    return value


def _value(data: bytes, pos: int):
    c = data[pos:pos + 1]
    if c == b"(":
        items = []
        pos += 1
        while data[pos:pos + 1] != b")":
            if data[pos:pos + 1] == b" ":
                pos += 1
                continue
            item, pos = _value(data, pos)
            items.append(item)
        return items, pos + 1
    if c == b'"':
        out = bytearray()
        pos += 1
        while data[pos:pos + 1] != b'"':
            if data[pos:pos + 1] == b"\\":
                pos += 1
            assert 0x20 <= data[pos] < 0x7F or data[pos] == 0x09, "quoted strings: printable 7-bit text"
            out.append(data[pos])
            pos += 1
        return out.decode("ascii"), pos + 1
    if c == b"{":
        end = data.index(b"}\r\n", pos)
        n = int(data[pos + 1:end])
        start = end + 3
        return data[start:start + n].decode("utf-8"), start + n
    m = NUMBER.match(data, pos)
    if m and not ATOM.match(data, pos).group().strip(b"0123456789"):
        return int(m.group()), m.end()
    m = ATOM.match(data, pos)
    assert m, f"bad syntax at {pos}: {data[pos:pos + 40]!r}"
    atom = m.group().decode("ascii")
    return (None if atom == "NIL" else atom), m.end()


def check_body(body, extended: bool) -> None:
    """Assert that a parsed BODY / BODYSTRUCTURE follows the RFC 3501 grammar (9, "body")."""
    assert isinstance(body, list) and body, body
    if isinstance(body[0], list):  # body-type-mpart
        kids = 0
        while kids < len(body) and isinstance(body[kids], list):
            check_body(body[kids], extended)
            kids += 1
        rest = body[kids:]
        assert isinstance(rest[0], str), rest
        if extended:
            assert len(rest) == 5, rest
            _check_params(rest[1])
            _check_extension(rest[2:])
        else:
            assert len(rest) == 1, rest
        return
    maintype, subtype, params, cid, description, encoding, size = body[:7]
    assert isinstance(maintype, str) and isinstance(subtype, str) and isinstance(encoding, str)
    _check_params(params)
    assert cid is None or isinstance(cid, str)
    assert description is None or isinstance(description, str)
    assert isinstance(size, int) and size >= 0
    rest = body[7:]
    if maintype.upper() == "TEXT":
        assert isinstance(rest[0], int)
        rest = rest[1:]
    elif (maintype.upper(), subtype.upper()) == ("MESSAGE", "RFC822"):
        envelope, inner, lines = rest[:3]
        assert isinstance(envelope, list) and len(envelope) == 10
        check_body(inner, extended)
        assert isinstance(lines, int)
        rest = rest[3:]
    if extended:
        assert len(rest) == 4 and rest[0] is None, rest  # MD5 NIL, then dsp lang loc
        _check_extension(rest[1:])
    else:
        assert rest == [], rest


def _check_params(params) -> None:
    assert params is None or (isinstance(params, list) and params and len(params) % 2 == 0
                              and all(isinstance(p, str) for p in params)), params


def _check_extension(ext) -> None:
    dsp, lang, loc = ext
    assert dsp is None or (isinstance(dsp, list) and len(dsp) == 2 and isinstance(dsp[0], str)), dsp
    if dsp is not None:
        _check_params(dsp[1])
    assert lang is None or isinstance(lang, str) or all(isinstance(x, str) for x in lang), lang
    assert loc is None or isinstance(loc, str), loc

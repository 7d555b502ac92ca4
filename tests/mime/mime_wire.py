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

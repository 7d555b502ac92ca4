"""RFC 3516 BINARY: a body part with its Content-Transfer-Encoding undone (FETCH BINARY[part],
BINARY.SIZE), and the conversion of a message appended with NUL octets (APPEND ``~{n}``).

Parts are found as BODY[part] finds them (``sections.find_part``). A leaf part's body is decoded
from base64 or quoted-printable; an identity encoding (none, 7bit, 8bit, binary) is returned as
stored; any other encoding cannot be decoded (``UnknownEncoding``: NO [UNKNOWN-CTE]). A multipart
or message/rfc822 part, or the whole message, is returned as stored (RFC 2045 6.4: such parts
carry only identity encodings, so there is nothing to undo at their level).
"""
from __future__ import annotations

import binascii

from ..errors import Unconvertible, UnknownEncoding
from .sections import find_part
from .structure import IDENTITY_ENCODINGS, Part, parse_message

CRLF = b"\r\n"
_BASE64_LINE = 57  # 76 characters of base64 per line (RFC 2045 6.8)


def binary_section(raw: bytes, part: tuple[int, ...]) -> bytes | None:
    """The decoded octets of BINARY[part]; None if there is no such part."""
    if not part:
        return raw
    node = find_part(parse_message(raw), part)
    if node is None:
        return None
    body = raw[node.body_start:node.end]
    if node.children is not None or node.message is not None:
        return body
    return decode(body, node.encoding)


def decode(body: bytes, encoding: str) -> bytes:
    """``body`` with its transfer encoding undone (lenient, as RFC 2045 asks of readers)."""
    if encoding in IDENTITY_ENCODINGS:
        return body
    if encoding == "base64":
        # a2b_base64 skips characters outside the alphabet (line breaks, stray blanks)
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:  # a truncated last group: decode what is whole
            whole = bytes(c for c in body if c in _B64_ALPHABET)
            return binascii.a2b_base64(whole[:len(whole) - len(whole) % 4])
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    raise UnknownEncoding(f"unknown Content-Transfer-Encoding {encoding[:40]}")


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def without_nul(raw: bytes) -> bytes:
    """RFC 3516 4.4: the message to store for an APPEND whose literal8 carries NUL octets. Each
    leaf part whose body holds NUL is re-encoded as base64 (its Content-Transfer-Encoding
    header replaced); nothing else changes. A message without NUL is returned as it is."""
    if b"\0" not in raw:
        return raw
    edits: list[tuple[int, int, bytes]] = []
    _collect(raw, parse_message(raw), edits)
    out, at = [], 0
    for start, end, replacement in sorted(edits):
        out += [raw[at:start], replacement]
        at = end
    out.append(raw[at:])
    converted = b"".join(out)
    if b"\0" in converted:
        raise Unconvertible("NUL outside a body part")
    return converted


def _collect(raw: bytes, part: Part, edits: list[tuple[int, int, bytes]]) -> None:
    if part.children is not None:
        for child in part.children:
            _collect(raw, child, edits)
        return
    if part.message is not None:
        _collect(raw, part.message, edits)
        return
    body = raw[part.body_start:part.end]
    if b"\0" not in body or b"\0" in raw[part.start:part.body_start]:
        return  # nothing to do, or NUL in the header: left for the final check
    if part.encoding not in IDENTITY_ENCODINGS:
        raise Unconvertible("NUL in an encoded part")
    lines = (raw[f.start:f.end] for f in part.fields if f.name != "content-transfer-encoding")
    header = b"".join(line if line.endswith(b"\n") else line + CRLF for line in lines)
    header += b"Content-Transfer-Encoding: base64" + CRLF + CRLF
    encoded = CRLF.join(binascii.b2a_base64(body[i:i + _BASE64_LINE], newline=False)
                        for i in range(0, len(body), _BASE64_LINE))
    edits.append((part.start, part.end, header + encoded))

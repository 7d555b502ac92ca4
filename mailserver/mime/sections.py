"""BODY[section] (RFC 3501 6.4.5): the bytes a FETCH of a section returns, as stored.

Part numbers follow RFC 3501: a multipart's children are 1, 2, ...; in a message that is not
multipart, part 1 is its body; a message/rfc822 part's numbers continue into the encapsulated
message. HEADER, HEADER.FIELDS[.NOT] and TEXT address a message (the top one, or the message in
a message/rfc822 part); MIME addresses a body part's own header.
"""
from __future__ import annotations

from .headers import Field, scan_header
from .structure import Part, parse_message

HEADER, HEADER_FIELDS, HEADER_FIELDS_NOT, TEXT, MIME = "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
CRLF = b"\r\n"


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    node: Part | None = None
    for number in path:
        container = root if node is None else node
        if node is not None and node.message is not None:
            container = node.message  # into the encapsulated message
        if container.children is not None:
            if not 1 <= number <= len(container.children):
                return None
            node = container.children[number - 1]
        elif number == 1 and (node is None or container is not node):
            node = container  # part 1 of a non-multipart message is its body
        else:
            return None
    return node


def _header_fields(raw: bytes, fields: list[Field], start: int, body_start: int,
                   names: tuple[str, ...], keep: bool) -> bytes:
    wanted = {n.lower() for n in names}
    # line breaks as the message has them: CRLF, unless it was stored with bare LF
    newline = b"\n" if raw.endswith(b"\n", start, body_start) and not raw.endswith(b"\r\n", start, body_start) \
        else CRLF
    out = []
    for f in fields:
        if (f.name in wanted) == keep:
            line = raw[f.start:f.end]
            out.append(line if line.endswith(b"\n") else line + newline)
    out.append(newline)  # the blank line that ends a header belongs to it (RFC 3501 6.4.5)
    return b"".join(out)


def _message_section(raw: bytes, fields: list[Field], start: int, body_start: int, end: int,
                     spec: str, names: tuple[str, ...]) -> bytes:
    """HEADER, TEXT or HEADER.FIELDS[.NOT] of the message spanning raw[start:end]."""
    if spec == HEADER:
        return raw[start:body_start]
    if spec == TEXT:
        return raw[body_start:end]
    if spec in (HEADER_FIELDS, HEADER_FIELDS_NOT):
        return _header_fields(raw, fields, start, body_start, names, spec == HEADER_FIELDS)
    return b""


def fetch_section(raw: bytes, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()) -> bytes:
    """The octets of BODY[<part>.<text>] (before any <partial> slicing); b"" if there are none."""
    spec = text.upper() if text else None
    if not part:
        if spec is None:
            return raw
        # the top message's header and text need no MIME tree: a client's first sync fetches
        # HEADER.FIELDS of every message
        top_fields, body_start = scan_header(raw, 0, len(raw))
        return _message_section(raw, top_fields, 0, body_start, len(raw), spec, fields)
    node = find_part(parse_message(raw), tuple(part))
    if node is None:
        return b""
    if spec is None:
        return raw[node.body_start:node.end]
    if spec == MIME:
        return raw[node.start:node.body_start]
    message = node.message
    if message is None:
        return b""  # HEADER / TEXT only exist for message/rfc822 parts
    return _message_section(raw, message.fields, message.start, message.body_start, message.end, spec, fields)

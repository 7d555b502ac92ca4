"""The MIME part tree of a message, as offsets into its raw bytes, and its BODY / BODYSTRUCTURE.

A message is its root part: the part's header is the message header. A multipart part has
``children``; a message/rfc822 part has ``message`` (the root part of the encapsulated message,
which spans the part's body). Boundaries are found as RFC 2046 5.1.1 says: a delimiter line
starts with "--boundary", may carry trailing blanks, and the line break before it belongs to the
delimiter, not to the part (the stdlib parser agrees).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import envelope
from .headers import (CR, LF, MIME_TOKEN, Field, Params, first_values, parse_content_type,
                      parse_disposition, param, scan_header, text_of)
from .wire import NIL, nstring, param_list, string, string_list, token

#: nesting and part-count bounds: a hostile message must not exhaust the stack or the column
MAX_DEPTH = 40
MAX_PARTS = 2000
#: encodings under which a message/rfc822 part is itself parsed (RFC 2046 5.2.1 allows no other)
IDENTITY_ENCODINGS = frozenset(("", "7bit", "8bit", "binary"))
#: what an empty multipart (no delimiter found) shows in BODYSTRUCTURE: one empty text part
EMPTY_TEXT = '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0)'
EMPTY_TEXT_EXT = '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'
EMPTY_ENVELOPE = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


@dataclass(slots=True)
class Part:
    start: int
    body_start: int
    end: int
    fields: list[Field]
    #: field name -> value of its first occurrence
    values: dict[str, bytes]
    maintype: str
    subtype: str
    params: Params
    children: list[Part] | None = None
    message: Part | None = None
    encoding: str = ""
    #: parsed address fields, shared by ENVELOPE and the SEARCH text
    address_cache: dict = field(default_factory=dict)


@dataclass
class _Budget:
    parts: int = MAX_PARTS


def split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between the delimiters of ``boundary``."""
    delimiter = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        i = raw.find(delimiter, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != start and raw[i - 1] != LF:
            continue
        j = i + len(delimiter)
        closing = raw.startswith(b"--", j, end)
        k = j + 2 if closing else j
        while k < end and raw[k] in (0x20, 0x09):
            k += 1
        if k < end and raw[k] != LF and raw[k] != CR:
            continue  # "--boundaryX": a longer boundary, or text
        nl = raw.find(b"\n", k, end)
        line_end = end if nl < 0 else nl + 1
        if part_start >= 0:
            part_end = i
            if part_end > part_start and raw[part_end - 1] == LF:
                part_end -= 1
                if part_end > part_start and raw[part_end - 1] == CR:
                    part_end -= 1
            spans.append((part_start, part_end))
        if closing:
            return spans
        part_start = line_end
        pos = line_end
    if part_start >= 0:
        spans.append((part_start, end))  # no closing delimiter: the last part runs to the end
    return spans


def parse_part(raw: bytes, start: int, end: int, default: tuple[str, str] = ("text", "plain"),
               depth: int = 0, budget: _Budget | None = None) -> Part:
    """The part (or message) spanning raw[start:end], and everything inside it."""
    budget = budget or _Budget()
    budget.parts -= 1
    fields, body_start = scan_header(raw, start, end)
    values = first_values(fields)
    ctype = None
    encoding = ""
    if "content-type" in values:
        ctype = parse_content_type(text_of(values["content-type"]))
    if "content-transfer-encoding" in values:
        encoding = text_of(values["content-transfer-encoding"]).strip(" \t\"").lower()
        if not MIME_TOKEN.fullmatch(encoding):
            encoding = ""  # not a token: no known encoding, so read as 7bit (as Dovecot does)
    if ctype is None:
        ctype = (default[0], default[1], ())
    maintype, subtype, params = ctype
    if maintype == "text" and param(params, "charset") is None:
        params = params + (("charset", "us-ascii"),)  # RFC 2045 5.2, stated so clients need not know
    part = Part(start, body_start, end, fields, values, maintype, subtype, params, encoding=encoding)
    if maintype == "multipart":
        boundary = param(params, "boundary")
        if not boundary or depth >= MAX_DEPTH:
            # RFC 2046 requires the boundary; without it the body can only be read as text
            part.maintype, part.subtype, part.params = "text", "plain", (("charset", "us-ascii"),)
            return part
        child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
        part.children = []
        for s, e in split_multipart(raw, body_start, end, boundary.encode("utf-8", "replace")):
            if budget.parts <= 0:
                break
            part.children.append(parse_part(raw, s, e, child_default, depth + 1, budget))
    elif (maintype, subtype) == ("message", "rfc822") and encoding in IDENTITY_ENCODINGS \
            and depth < MAX_DEPTH and budget.parts > 0:
        part.message = parse_part(raw, body_start, end, ("text", "plain"), depth + 1, budget)
    return part


def parse_message(raw: bytes) -> Part:
    return parse_part(raw, 0, len(raw))


def count_lines(raw: bytes, start: int, end: int) -> int:
    """Lines of a body: its line breaks, plus a last line without one."""
    if end <= start:
        return 0
    lines = raw.count(b"\n", start, end)
    return lines if raw[end - 1] == LF else lines + 1


def _fields_text(part: Part, name: str) -> str | None:
    value = part.values.get(name)
    return None if value is None else text_of(value)


def _extension(part: Part) -> str:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    values = part.values
    if "content-disposition" not in values and "content-language" not in values \
            and "content-location" not in values:
        return "NIL NIL NIL"
    dsp = NIL
    disposition = parse_disposition(_fields_text(part, "content-disposition"))
    if disposition is not None:
        dsp = f"({token(disposition[0].upper())} {param_list(disposition[1])})"
    language = _fields_text(part, "content-language")
    langs = [w.strip() for w in language.split(",") if w.strip()] if language else []
    location = _fields_text(part, "content-location")
    return f"{dsp} {string_list(langs)} {nstring(location)}"


def body_and_structure(raw: bytes, part: Part) -> tuple[str, str]:
    """(BODY, BODYSTRUCTURE) of a part, RFC 3501 7.4.2, made in one walk: BODY is BODYSTRUCTURE
    without the extension data."""
    if part.children is not None:
        pairs = [body_and_structure(raw, c) for c in part.children]
        body_kids = "".join(b for b, _ in pairs) or EMPTY_TEXT
        ext_kids = "".join(e for _, e in pairs) or EMPTY_TEXT_EXT
        subtype = token(part.subtype.upper())
        return (f"({body_kids} {subtype})",
                f"({ext_kids} {subtype} {param_list(part.params)} {_extension(part)})")
    values = part.values
    cid = values.get("content-id")
    description = values.get("content-description")
    basic = (f"({token(part.maintype.upper())} {token(part.subtype.upper())} {param_list(part.params)} "
             f"{NIL if cid is None else string(text_of(cid))} "
             f"{NIL if description is None else string(text_of(description))} "
             f"{token(part.encoding.upper() or '7BIT')} {part.end - part.body_start}")
    if part.maintype == "text":
        basic += f" {count_lines(raw, part.body_start, part.end)}"
        body = ext = basic
    elif part.message is not None:
        inner = part.message
        inner_body, inner_ext = body_and_structure(raw, inner)
        env = envelope(inner.values, inner.address_cache)
        lines = count_lines(raw, part.body_start, part.end)
        body = f"{basic} {env} {inner_body} {lines}"
        ext = f"{basic} {env} {inner_ext} {lines}"
    elif part.maintype == "message" and part.subtype == "rfc822":
        # not parsed (encoded, which RFC 2046 forbids, or nested too deep): the grammar still
        # wants an envelope and a body after MESSAGE/RFC822, so empty ones stand in
        lines = count_lines(raw, part.body_start, part.end)
        body = f"{basic} {EMPTY_ENVELOPE} {EMPTY_TEXT} {lines}"
        ext = f"{basic} {EMPTY_ENVELOPE} {EMPTY_TEXT_EXT} {lines}"
    else:
        body = ext = basic
    return body + ")", f"{ext} NIL {_extension(part)})"

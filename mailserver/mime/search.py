"""Text for IMAP SEARCH, decoded once at delivery: headers with their encoded words decoded,
bodies decoded from base64 / quoted-printable and their charset, HTML reduced to text, all
case-folded with blank runs collapsed.

The stored form (``search_text``) is opaque to callers: seven sections joined by RS (U+001E),
subject, from, to, cc, bcc, the whole decoded header, the body text. RS, NUL and other C0
controls are removed from the text itself (PostgreSQL text cannot hold NUL).
"""
from __future__ import annotations

import binascii
import html
import re

from .envelope import parse_addresses
from .headers import decode_charset, decode_words, decoded_value, param, scan_header, text_of
from .structure import Part

SEPARATOR = "\x1e"
KEYS = ("subject", "from", "to", "cc", "bcc")
ADDRESS_KEYS = frozenset(KEYS[1:])
HEADER_SECTION, BODY_SECTION = 5, 6
#: body text kept per message: enough for any real notice or letter, bounded for huge mail
MAX_BODY_CHARS = 256 * 1024
#: raw bytes of one part decoded for search
MAX_PART_BYTES = 4 * 1024 * 1024

BLANKS = re.compile(r"[\s\x00-\x1f\x7f]+")
HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.S | re.I)
HTML_BLOCK = re.compile(r"</?(?:p|br|div|tr|td|th|li|ul|ol|table|h[1-6]|blockquote|pre|hr)\b[^>]*>", re.I)
HTML_TAG = re.compile(r"<[^>]*>")


def normalize(text: str) -> str:
    """Case-folded, controls dropped, blank runs as one space: how text and needles compare."""
    return BLANKS.sub(" ", text).casefold().strip()


def html_text(markup: str) -> str:
    markup = HTML_DROP.sub(" ", markup)
    markup = HTML_BLOCK.sub(" ", markup)
    markup = HTML_TAG.sub("", markup)  # inline tags inside a word (<b>中</b>文) must not split it
    return html.unescape(markup)


def decode_body(data: bytes, encoding: str) -> bytes:
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        # damaged base64: decode what is whole rather than nothing
        try:
            cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            return binascii.a2b_base64(cleaned[:len(cleaned) - len(cleaned) % 4])
        except (binascii.Error, ValueError):
            return data
    return data


def _part_text(raw: bytes, part: Part) -> str:
    data = decode_body(raw[part.body_start:min(part.end, part.body_start + MAX_PART_BYTES)], part.encoding)
    text = decode_charset(data, param(part.params, "charset"))
    return html_text(text) if part.subtype == "html" else text


def _body_texts(raw: bytes, part: Part, out: list[str], budget: list[int]) -> None:
    if budget[0] <= 0:
        return
    if part.children is not None:
        for child in part.children:
            _body_texts(raw, child, out, budget)
    elif part.message is not None:
        # a forwarded message's header and body are text of this message's body
        out.append(" ".join(decoded_value(f.raw_value(raw)) for f in part.message.fields
                            if f.name in ("subject", "from", "to", "cc")))
        _body_texts(raw, part.message, out, budget)
    elif part.maintype == "text":
        text = _part_text(raw, part)
        out.append(text[:budget[0]])
        budget[0] -= len(text)


def address_text(value: bytes) -> str:
    """Addresses as a reader sees them, ``Name <box@host>``: names unquoted and decoded."""
    out = []
    for a in parse_addresses(text_of(value)):
        if a.host is None:
            if a.mailbox:
                out.append(decode_words(a.mailbox) + ":")  # a group's name
            continue
        spec = f"<{a.mailbox}@{a.host}>"
        out.append(f"{decode_words(a.name)} {spec}" if a.name else spec)
    return ", ".join(out)


def build(raw: bytes, root: Part) -> str:
    sections = {k: [] for k in KEYS}
    header: list[str] = []
    for f in root.fields:
        value = decoded_value(f.raw_value(raw))
        if f.name in ADDRESS_KEYS:
            sections[f.name].append(address_text(f.raw_value(raw)))
        elif f.name == "subject":
            sections[f.name].append(value)
        header.append(f"{f.name}: {value}")
    body: list[str] = []
    _body_texts(raw, root, body, [MAX_BODY_CHARS])
    parts = [" ".join(sections[k]) for k in KEYS] + [" ".join(header), " ".join(body)]
    return SEPARATOR.join(normalize(p) for p in parts)


def _span(search_text: str, key: str) -> tuple[int, int] | None:
    if key == "text":
        index = HEADER_SECTION
        last = BODY_SECTION
    elif key == "body":
        index = last = BODY_SECTION
    elif key in KEYS:
        index = last = KEYS.index(key)
    else:
        return None
    start = 0
    for _ in range(index):
        start = search_text.find(SEPARATOR, start) + 1
        if start == 0:
            return None
    end = start
    for _ in range(last - index + 1):
        end = search_text.find(SEPARATOR, end)
        if end < 0:
            end = len(search_text)
            break
        end += 1
    else:
        end -= 1
    return start, end


def matches(search_text: str | None, key: str, needle: str) -> bool:
    """SEARCH SUBJECT / FROM / TO / CC / BCC / BODY / TEXT: decoded, case-insensitive substring."""
    if search_text is None:
        return False
    span = _span(search_text, key.lower())
    if span is None:
        return False
    wanted = normalize(needle)
    if not wanted:
        return True
    return search_text.find(wanted, span[0], span[1]) >= 0


def header_contains(raw: bytes, name: str, needle: str) -> bool:
    """SEARCH HEADER name string: some ``name`` field of the message header contains needle."""
    fields, _ = scan_header(raw, 0, len(raw))
    name = name.lower()
    wanted = normalize(needle)
    for f in fields:
        if f.name == name and (not wanted or wanted in normalize(decoded_value(f.raw_value(raw)))):
            return True
    return False

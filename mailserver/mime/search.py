"""Text for IMAP SEARCH, decoded once at delivery: headers with their encoded words decoded,
bodies decoded from base64 / quoted-printable and their charset, HTML reduced to text, all
case-folded with blank runs collapsed.

The stored form (``search_text``) is opaque to callers: seven sections joined by RS (U+001E),
subject, from, to, cc, bcc, the other header fields, the body text (of multipart/alternative,
the text/plain alternative only). TEXT searches all seven. RS counts as a blank
inside the text and NUL is dropped (PostgreSQL text cannot hold it).
"""
from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import html
import re

from .envelope import Address, addresses, parse_addresses
from .headers import decode_charset, decode_words, decoded_value, param, scan_header, text_of
from .structure import Part

SEPARATOR = "\x1e"
KEYS = ("subject", "from", "to", "cc", "bcc")
ADDRESS_KEYS = frozenset(KEYS[1:])
SECTION_KEYS = frozenset(KEYS)
BODY_SECTION = 6
#: body text kept per message: enough for any real notice or letter, bounded for huge mail
MAX_BODY_CHARS = 256 * 1024
#: raw bytes of one part decoded for search (base64 of MAX_BODY_CHARS Chinese characters fits)
MAX_PART_BYTES = 1536 * 1024

#: HTML reduction in linear time whatever the markup: no pattern may rescan the text after an
#: unclosed "<" (a hostile "<<<<..." or "<script>" repeated must not cost quadratic time)
HTML_HIDDEN = re.compile(r"<(script|style|head)\b|<!--", re.I)
HTML_HIDDEN_END = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I),
                   "head": re.compile(r"</head\s*>", re.I), "": re.compile(r"-->")}
HTML_BLOCK = re.compile(r"</?(?:p|br|div|tr|td|th|li|ul|ol|table|h[1-6]|blockquote|pre|hr)\b[^<>]*>", re.I)
HTML_TAG = re.compile(r"<[^<>]*>")


def normalize(text: str) -> str:
    """Case-folded, blank runs as one space, no NUL: how text and needles compare.

    str.split() treats RS (the separator) as a blank too, so no section can contain one.
    """
    if "\x00" in text:
        text = text.replace("\x00", " ")
    return " ".join(text.split()).casefold()


def _without_hidden(markup: str) -> str:
    """Markup without scripts, styles, the head and comments (an unclosed one hides the rest)."""
    out = []
    pos = 0
    while True:
        m = HTML_HIDDEN.search(markup, pos)
        if m is None:
            out.append(markup[pos:])
            break
        out.append(markup[pos:m.start()])
        end = HTML_HIDDEN_END[(m.group(1) or "").lower()].search(markup, m.end())
        if end is None:
            break
        out.append(" ")
        pos = end.end()
    return "".join(out)


def html_text(markup: str) -> str:
    markup = HTML_BLOCK.sub(" ", _without_hidden(markup))
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


def _alternative(part: Part) -> list[Part]:
    """Of multipart/alternative, the parts to index: the text/plain one says what the HTML says,
    unless it is a stub ("view this mail in an HTML client") a tenth the size of the HTML."""
    children = part.children or []
    plain = next((c for c in children if c.maintype == "text" and c.subtype == "plain"), None)
    if plain is None:
        return children
    largest = max(c.end - c.body_start for c in children)
    return [plain] if (plain.end - plain.body_start) * 10 >= largest else children


def _body_texts(raw: bytes, part: Part, out: list[str], budget: list[int]) -> None:
    if budget[0] <= 0:
        return
    if part.children is not None:
        for child in (_alternative(part) if part.subtype == "alternative" else part.children):
            _body_texts(raw, child, out, budget)
    elif part.message is not None:
        # a forwarded message's header and body are text of this message's body
        out.append(" ".join(decoded_value(f.value) for f in part.message.fields))
        _body_texts(raw, part.message, out, budget)
    elif part.maintype == "text":
        text = _part_text(raw, part)
        out.append(text[:budget[0]])
        budget[0] -= len(text)


def address_text(found: list[Address] | None) -> str:
    """Addresses as a reader sees them, ``Name <box@host>``: names unquoted and decoded."""
    out = []
    for a in found or ():
        if a.host is None:
            if a.mailbox:
                out.append(decode_words(a.mailbox) + ":")  # a group's name
            continue
        spec = f"<{a.mailbox}@{a.host}>"
        out.append(f"{decode_words(a.name)} {spec}" if a.name else spec)
    return ", ".join(out)


def build(raw: bytes, root: Part) -> str:
    """The search text of a message: its sections joined by SEPARATOR."""
    sections: dict[str, list[str]] = {k: [] for k in KEYS}
    for f in root.fields:
        if f.name == "subject":
            sections["subject"].append(decoded_value(f.value))
        elif f.name in ADDRESS_KEYS:
            first = f.value is root.values[f.name]  # parsed already for ENVELOPE
            found = addresses(root.values, root.address_cache, f.name) if first else parse_addresses(text_of(f.value))
            sections[f.name].append(address_text(found))
    # the other header fields, decoded in one go (folding becomes blanks in normalize): for TEXT
    header = decoded_value(b"".join(raw[f.start:f.end] for f in root.fields if f.name not in SECTION_KEYS))
    body: list[str] = []
    _body_texts(raw, root, body, [MAX_BODY_CHARS])
    texts = [" ".join(sections[k]) for k in KEYS] + [header, " ".join(body)]
    return SEPARATOR.join(normalize(t) for t in texts)


def _span(search_text: str, key: str) -> tuple[int, int] | None:
    if key == "text":
        return 0, len(search_text)  # every header and the body (RFC 3501 6.4.4)
    index = BODY_SECTION if key == "body" else KEYS.index(key) if key in KEYS else -1
    if index < 0:
        return None
    start = 0
    for _ in range(index):
        start = search_text.find(SEPARATOR, start) + 1
        if start == 0:
            return None
    end = search_text.find(SEPARATOR, start)
    return start, len(search_text) if end < 0 else end


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


class SearchHeader:
    """A message header as SEARCH reads it, parsed once however many keys read it: HEADER name
    string (``contains``) and SENTBEFORE / SENTON / SENTSINCE (``sent_date``, of the Date field)."""

    __slots__ = ("_values", "_texts", "_sent")

    def __init__(self, raw: bytes) -> None:
        fields, _ = scan_header(raw, 0, len(raw))
        self._values: dict[str, list[bytes]] = {}
        for f in fields:
            self._values.setdefault(f.name, []).append(f.value)
        #: field name -> its values decoded and normalised, made on the first key that asks
        self._texts: dict[str, list[str]] = {}
        self._sent: dt.date | None | bool = False  # False: not yet worked out

    def contains(self, name: str, needle: str) -> bool:
        """Some ``name`` field contains needle, decoded and case-insensitively (an empty needle:
        the field is present)."""
        name = name.lower()
        texts = self._texts.get(name)
        if texts is None:
            texts = self._texts[name] = [normalize(decoded_value(v)) for v in self._values.get(name, ())]
        wanted = normalize(needle)
        return any(wanted in t for t in texts)

    @property
    def sent_date(self) -> dt.date | None:
        """The day of the first Date field (in its own time zone), None if absent or unreadable."""
        if self._sent is False:
            self._sent = None
            dates = self._values.get("date")
            if dates:
                try:
                    self._sent = email.utils.parsedate_to_datetime(text_of(dates[0])).date()
                except (TypeError, ValueError, IndexError, OverflowError):
                    pass
        return self._sent  # type: ignore[return-value]


def header_contains(raw: bytes, name: str, needle: str) -> bool:
    """SEARCH HEADER name string: some ``name`` field of the message header contains needle."""
    return SearchHeader(raw).contains(name, needle)

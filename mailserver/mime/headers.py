"""Header blocks on raw bytes: where a header ends, its fields, unfolding, RFC 2047 words, and
MIME parameters with RFC 2231 continuations.

Everything works on offsets into the stored bytes, so sizes and sections are the bytes as stored
(CRLF or bare LF alike), and nothing here raises on malformed input.
"""
from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

LF, CR = 0x0A, 0x0D
#: a field name (printable ASCII but ':'), optional blanks, then ':' (RFC 5322 2.2, obs-FWS allowed)
FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
#: one whole field: its name, then lines up to the last continuation line
WHOLE_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:([^\n]*\n(?:[ \t][^\n]*\n)*)")
#: fields kept per header: a hostile 50 MB header of tiny fields must not become millions of
#: objects (the header still ends where it ends; fields past this are not listed)
MAX_FIELDS = 10_000
#: lower-cased field names seen (a few dozen in practice), to skip decoding them each time
_names: dict[bytes, str] = {}


R = TypeVar("R")


def cached_if_short(maxsize: int, limit: int = 512) -> Callable[[Callable[[str | None], R]], Callable[[str | None], R]]:
    """lru_cache for the short values that recur in every message (types, charsets, a drop's
    subject); a long value is computed each time, so no sender can fill the cache with megabytes."""
    def wrap(fn: Callable[[str | None], R]) -> Callable[[str | None], R]:
        cached = lru_cache(maxsize=maxsize)(fn)

        @wraps(fn)
        def call(value: str | None) -> R:
            if value is not None and len(value) > limit:
                return fn(value)
            return cached(value)
        return call
    return wrap


@dataclass(slots=True)
class Field:
    name: str  # lower-cased
    #: offsets of the whole field in the raw bytes: first line start .. after the last line ending
    start: int
    end: int
    #: where the value starts (just after the colon)
    value_start: int
    #: the value as carried, unfolded (line breaks removed, the folding blanks kept), trimmed
    value: bytes = b""


def _unfold(raw: bytes, fields: list[Field]) -> list[Field]:
    for f in fields:
        value = raw[f.value_start:f.end].strip(b" \t\r\n")
        if b"\n" in value:  # folded: drop the line breaks, keep the blanks after them
            value = value.replace(b"\r\n", b"").replace(b"\n", b"").strip(b" \t\r")
        f.value = value
    return fields


def scan_header(raw: bytes, start: int, end: int) -> tuple[list[Field], int]:
    """The fields of the header starting at ``start`` and the offset where the body starts.

    The header ends at the first empty line (which belongs to the header) or, leniently, at the
    first line that is neither a field nor a continuation (that line starts the body), as the
    stdlib parser does. A leading mbox "From " line is skipped.
    """
    # The common case in one regex match per field; anything unusual takes the line-by-line walk.
    fields: list[Field] = []
    pos = start
    match_field = WHOLE_FIELD.match
    names = _names
    while True:
        m = match_field(raw, pos, end)
        if m is None:
            break
        if len(fields) < MAX_FIELDS:
            name = names.get(m.group(1))
            if name is None:
                name = m.group(1).decode("ascii").lower()
                if len(names) < 1000:
                    names[m.group(1)] = name
            fields.append(Field(name, pos, m.end(), m.start(2)))
        pos = m.end()
    if pos < end and (raw[pos] == LF or raw.startswith(b"\r\n", pos)):
        return _unfold(raw, fields), pos + (1 if raw[pos] == LF else 2)
    if pos == end:
        return _unfold(raw, fields), end
    return scan_header_lines(raw, start, end)


def scan_header_lines(raw: bytes, start: int, end: int) -> tuple[list[Field], int]:
    """scan_header line by line: the general case, and the reference the fast path is tested against."""
    fields: list[Field] = []
    pos = start
    match = FIELD_NAME.match
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = raw[pos]
        if first == LF or (first == CR and (line_end - pos == 2 or pos + 1 == end)):
            return _unfold(raw, fields), line_end  # the empty line that ends the header
        if first in (0x20, 0x09):
            if fields and fields[-1].end == pos:  # (not after fields past MAX_FIELDS)
                fields[-1].end = line_end
            pos = line_end
            continue
        m = match(raw, pos, line_end)
        if m is None:
            if pos == start and raw.startswith(b"From ", pos):
                pos = line_end
                continue
            return _unfold(raw, fields), pos  # a body line without the blank line before it
        if len(fields) < MAX_FIELDS:
            fields.append(Field(m.group(1).decode("ascii").lower(), pos, line_end, m.end()))
        pos = line_end
    return _unfold(raw, fields), end


def first_values(fields: list[Field]) -> dict[str, bytes]:
    """Field name -> value of its first occurrence (what ENVELOPE and BODYSTRUCTURE use)."""
    values: dict[str, bytes] = {}
    for f in fields:
        if f.name not in values:
            values[f.name] = f.value
    return values


# --- text of 8-bit bytes and charsets -------------------------------------------------------

#: labels mail carries that Python names differently, or whose superset decodes more mail
#: correctly (GB2312-labelled mail routinely holds GBK characters)
CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "euc-cn": "gb18030", "csgb2312": "gb18030", "x-euc-cn": "gb18030",
    "big5": "big5hkscs", "x-big5": "big5hkscs", "cn-big5": "big5hkscs",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8", "utf8": "utf-8",
}


#: labels that say nothing about 8-bit bytes (us-ascii is the default when none is given):
#: such text is guessed at, like unlabelled text
GUESSED_LABELS = frozenset(("us-ascii", "ascii", "unknown-8bit", "x-unknown", "us_ascii", "ansi_x3.4-1968"))


@cached_if_short(maxsize=256, limit=64)
def codec_name(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None if unknown (then the text is guessed)."""
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    if label in GUESSED_LABELS:
        return None
    label = CHARSET_ALIASES.get(label, label)
    try:
        # a label like "base64" names a bytes transform: bytes.decode refuses it (LookupError),
        # and decode_charset then falls back to text_of
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def text_of(data: bytes) -> str:
    """Unlabelled 8-bit text (raw header bytes, charset-less bodies): UTF-8, else GB18030."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def decode_charset(data: bytes, charset: str | None) -> str:
    codec = codec_name(charset)
    if codec is None:
        return text_of(data)
    try:
        text = data.decode(codec, "replace")
        text.encode("utf-8")  # some codecs (UTF-7, UTF-16) can yield lone surrogates
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    except Exception:  # a codec may reject its input in other ways; never raise on mail
        return text_of(data)


# --- RFC 2047 encoded words -----------------------------------------------------------------

ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    try:
        data = text.encode("ascii")
        if encoding in "bB":
            data = data + b"=" * (-len(data) % 4)
            return binascii.a2b_base64(data)
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; blanks between adjacent words go, as the RFC says.

    Adjacent words in one charset are joined before decoding, since some mailers split a
    multi-byte character across two words.
    """
    if "=?" not in value:
        return value
    return _decode_words(value)


@cached_if_short(maxsize=4096)  # a drop's notices share their subject and sender: decoded once
def _decode_words(value: str) -> str:
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    have_pending = False
    pos = 0
    for m in ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        data = _word_bytes(m.group(2), m.group(3))
        charset = m.group(1).split("*", 1)[0]
        if data is None:  # not decodable: keep the word as it stands
            if have_pending:
                out.append(decode_charset(bytes(pending), pending_charset))
                pending.clear()
                have_pending = False
            out.append(between + m.group(0))
            pos = m.end()
            continue
        if have_pending and (between.strip(" \t\r\n") or charset.lower() != (pending_charset or "").lower()):
            out.append(decode_charset(bytes(pending), pending_charset))
            pending.clear()
            have_pending = False
            if between.strip(" \t\r\n"):
                out.append(between)
        elif not have_pending:
            out.append(between)
        pending += data
        pending_charset = charset
        have_pending = True
        pos = m.end()
    if have_pending:
        out.append(decode_charset(bytes(pending), pending_charset))
    out.append(value[pos:])
    return "".join(out)


def decoded_value(raw_value: bytes) -> str:
    """A header value as a reader sees it: 8-bit bytes decoded, encoded words decoded."""
    return decode_words(text_of(raw_value))


# --- MIME parameters (RFC 2045 5.1, RFC 2231) -----------------------------------------------

#: RFC 2045 token (lower-cased): what a type or subtype may be made of
MIME_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
CONTINUATION = re.compile(r"^(.+?)\*(\d{1,6})(\*?)$")
UNQUOTE = re.compile(r"\\(.)", re.S)


def _unquote(value: str) -> str:
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return UNQUOTE.sub(r"\1", value) if "\\" in value else value
    return value.strip()


def _pct_encode(text: str) -> str:
    return "".join(c if c.isalnum() and c.isascii() or c in "!#$&+-.^_`|~" else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def parse_params(text: str) -> list[tuple[str, str]]:
    """``; name=value`` pairs (names lower-cased) with RFC 2231 continuations joined.

    A parameter split as ``name*0*=utf-8''%E4..; name*1*=%B8...`` comes back as one
    ``("name*", "utf-8''%E4...%B8...")``: still in RFC 2231 form, so it travels in 7-bit
    IMAP strings and clients decode it as they do for every other server. Plain continuations
    (``name*0=..; name*1=..``) are simply joined. The first occurrence of a name wins.
    """
    params: list[tuple[str, str | None]] = []
    pieces: dict[str, list[tuple[int, bool, str]]] = {}
    seen: set[str] = set()
    for m in PARAM.finditer(text):
        name = m.group(1).lower()
        value = _unquote(m.group(2))
        c = CONTINUATION.match(name)
        if c:
            base = c.group(1)
            if base not in pieces:
                pieces[base] = []
                params.append((base, None))  # placeholder keeps the first-seen order
            pieces[base].append((int(c.group(2)), bool(c.group(3)), value))
            continue
        if name in seen:
            continue
        seen.add(name)
        params.append((name, value))
    if not pieces:
        return params  # type: ignore[return-value]
    out: list[tuple[str, str]] = []
    for name, value in params:
        if value is None:
            segs = sorted(pieces[name], key=lambda s: s[0])
            if segs[0][1]:  # extended: charset'language'percent-encoded
                out.append((name + "*", "".join(v if ext else _pct_encode(v) for _, ext, v in segs)))
            else:
                out.append((name, "".join(v for _, _, v in segs)))
        elif name.rstrip("*") not in pieces:
            out.append((name, value))  # a plain name beside its continued form loses (RFC 2231 3)
    return out


#: parameters as parsed: (lower-cased name, value) pairs in order
Params = tuple[tuple[str, str], ...]


def param(params: Params | list[tuple[str, str]], name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None


def decode_param(name: str, value: str) -> tuple[str, str]:
    """(plain name, readable value) of one parameter as parse_params returns it."""
    if not name.endswith("*"):
        return name, decode_words(value) if "=?" in value else value
    charset, _, rest = value.partition("'")
    _, _, encoded = rest.partition("'")
    if not rest:
        charset, encoded = "", value
    data = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), encoded)
    return name[:-1], decode_charset(data.encode("latin-1", "replace"), charset or None)


@cached_if_short(maxsize=2048)  # the same few Content-Type values recur in every message
def parse_content_type(value: str | None) -> tuple[str, str, Params] | None:
    """(type, subtype, params) lower-cased, or None if absent or not a type/subtype."""
    if value is None:
        return None
    head, sep, rest = value.partition(";")
    maintype, slash, subtype = head.partition("/")
    maintype = maintype.strip(" \t\"").lower()
    subtype = subtype.strip(" \t\"").lower()
    if not slash or not MIME_TOKEN.fullmatch(maintype) or not MIME_TOKEN.fullmatch(subtype):
        return None  # RFC 2045 5.2: an invalid Content-Type counts as absent
    return maintype, subtype, tuple(parse_params(sep + rest)) if sep else ()


@cached_if_short(maxsize=1024)
def parse_disposition(value: str | None) -> tuple[str, Params] | None:
    if value is None:
        return None
    head, sep, rest = value.partition(";")
    kind = head.strip(" \t\"").lower()
    if not kind:
        return None
    return kind, tuple(parse_params(sep + rest)) if sep else ()

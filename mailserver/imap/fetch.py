"""FETCH responses (RFC 3501 6.4.5, 7.4.2), rendered from Core rows in UID order.

The structure items come from what ``mailserver.mime.analyze`` cached at delivery; only body
sections read the raw bytes.
"""
from __future__ import annotations

from .. import mime
from ..mime.binary import binary_section
from ..mime.wire import string
from .codec import format_internaldate
from .commands import FetchAtt
from .objectid import email_id
from .selected import flag_text

#: item -> the message/content columns it needs
_COLUMNS = {
    "FLAGS": ("flags", "keywords"),
    "INTERNALDATE": ("internaldate",),
    "RFC822.SIZE": ("size",),
    "ENVELOPE": ("envelope", "raw"),
    "BODY": ("body", "raw"),
    "BODYSTRUCTURE": ("bodystructure", "raw"),
    "RFC822": ("raw",),
    "RFC822.HEADER": ("raw",),
    "RFC822.TEXT": ("raw",),
    "BODY[]": ("raw",),
    "BINARY": ("raw",),
    "BINARY.SIZE": ("raw",),
    "UID": (),
    "MODSEQ": ("modseq",),
    # RFC 8514, RFC 8474, RFC 8970
    "SAVEDATE": ("savedate",),
    "EMAILID": ("content_id", "envelope", "size"),
    "THREADID": (),
    "PREVIEW": ("preview",),
}
_CACHED = {"ENVELOPE": "envelope", "BODY": "body", "BODYSTRUCTURE": "bodystructure"}


def columns_for(atts: tuple[FetchAtt, ...]) -> tuple[str, ...]:
    cols: list[str] = []
    for a in atts:
        for c in _COLUMNS[a.name]:
            # Structure items read raw only if the cache is empty; fetched raw is large, so
            # the cached column goes first and raw is added only when a section needs it.
            if c == "raw" and a.name in _CACHED:
                continue
            if c not in cols:
                cols.append(c)
    return tuple(cols)


def needs_raw(atts: tuple[FetchAtt, ...], rows) -> bool:
    """Whether some row lacks a PREVIEW cached at delivery (stored before previews were) that
    a non-LAZY PREVIEW item asks for: making one reads the message (the heavy lane)."""
    return any(a.name == "PREVIEW" and not a.lazy for a in atts) and any(r.preview is None for r in rows)


def sets_seen(atts: tuple[FetchAtt, ...]) -> bool:
    """RFC 3501: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \\Seen; RFC 3516: BINARY[...] too."""
    return any(((a.section or a.name == "BINARY") and not a.peek) or a.name in ("RFC822", "RFC822.TEXT")
               for a in atts)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _binary(raw: bytes, att: FetchAtt) -> bytes:
    """RFC 3516: the decoded part as a literal (a literal8, ``~{n}``, if it holds NUL), or its
    size; raises UnknownEncoding (NO [UNKNOWN-CTE]). A part that does not exist is empty, as
    BODY[part] is."""
    data = binary_section(raw, att.part) or b""
    if att.name == "BINARY.SIZE":
        return b"%d" % len(data)
    if att.partial:
        start, count = att.partial
        data = data[start:start + count]
    return (b"~" if b"\0" in data else b"") + _literal(data)


def _structure(row, name: str, raw_loader) -> bytes:
    cached = getattr(row, _CACHED[name])
    if cached is None:
        analyzed = mime.analyze(raw_loader())
        cached = getattr(analyzed, _CACHED[name])
    return cached.encode("utf-8")


def _preview(row, lazy: bool, raw_loader) -> bytes:
    """RFC 8970: the preview cached at delivery; for content stored before previews were, one
    made from the message now, or NIL under LAZY (the client asks again later)."""
    text = row.preview
    if text is None:
        if lazy:
            return b"NIL"
        text = mime.make_preview(raw_loader())
    return string(text).encode("utf-8")


def render(seq: int, row, atts: tuple[FetchAtt, ...], recent: bool, with_uid: bool, raw_loader) -> bytes:
    """One ``* seq FETCH (...)`` line. ``raw_loader()`` returns the raw bytes of this row's message."""
    parts: list[bytes] = []
    if with_uid:
        parts.append(b"UID %d" % row.uid)
    for a in atts:
        name = a.name
        if name == "UID":
            if not with_uid:
                parts.append(b"UID %d" % row.uid)
        elif name == "FLAGS":
            parts.append(b"FLAGS " + flag_text(row.flags, row.keywords, recent).encode())
        elif name == "INTERNALDATE":
            parts.append(b'INTERNALDATE "' + format_internaldate(row.internaldate).encode() + b'"')
        elif name == "RFC822.SIZE":
            parts.append(b"RFC822.SIZE %d" % row.size)
        elif name == "MODSEQ":
            parts.append(b"MODSEQ (%d)" % row.modseq)
        elif name == "SAVEDATE":
            saved = row.savedate
            parts.append(b'SAVEDATE "' + format_internaldate(saved).encode() + b'"' if saved else b"SAVEDATE NIL")
        elif name == "EMAILID":
            parts.append(b"EMAILID (" + email_id(row.content_id, row.envelope, row.size).encode() + b")")
        elif name == "THREADID":
            parts.append(b"THREADID NIL")  # RFC 8474 5.2: threads are not computed
        elif name == "PREVIEW":
            parts.append(b"PREVIEW " + _preview(row, a.lazy, raw_loader))
        elif name in _CACHED:
            parts.append(name.encode() + b" " + _structure(row, name, raw_loader))
        elif name == "RFC822":
            parts.append(b"RFC822 " + _literal(raw_loader()))
        elif name == "RFC822.HEADER":
            parts.append(b"RFC822.HEADER " + _literal(mime.fetch_section(raw_loader(), (), "HEADER")))
        elif name == "RFC822.TEXT":
            parts.append(b"RFC822.TEXT " + _literal(mime.fetch_section(raw_loader(), (), "TEXT")))
        elif name in ("BINARY", "BINARY.SIZE"):
            parts.append(a.response_name().encode() + b" " + _binary(raw_loader(), a))
        else:
            data = mime.fetch_section(raw_loader(), a.part, a.text, a.fields)
            if a.partial:
                start, count = a.partial
                data = data[start:start + count]
            parts.append(a.response_name().encode() + b" " + _literal(data))
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"

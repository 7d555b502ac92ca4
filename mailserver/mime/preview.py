"""RFC 8970 PREVIEW: the first words of a message as a reader sees them, made at delivery.

The text comes from the first text part a reader would be shown (of multipart/alternative, the
text/plain alternative; HTML reduced to text when there is no plain one), never an attachment.
As Dovecot does, quoted lines ("> ...") and a signature ("-- " and below) are left out and blank
runs become one space. At most ``MAX_CHARS`` characters (RFC 8970 3.1: 256).
"""
from __future__ import annotations

from .headers import decode_charset, param, text_of
from .search import decode_body, html_text
from .structure import Part

#: RFC 8970 3.1: a preview has at most 256 characters
MAX_CHARS = 256
#: raw bytes of the chosen part decoded: far more than 256 characters of text, even after an
#: HTML head and its styles
MAX_PART_BYTES = 64 * 1024


def _attachment(part: Part) -> bool:
    value = part.values.get("content-disposition")
    return value is not None and text_of(value).strip().lower().startswith("attachment")


def _text_part(part: Part, depth: int = 0) -> Part | None:
    """The part whose text is the preview (None: the message has no text to show)."""
    if part.children is not None:
        children = part.children
        if part.subtype == "alternative":
            plain = [c for c in children if c.maintype == "text" and c.subtype == "plain"]
            children = plain + [c for c in children if c not in plain]
        for child in children:
            found = _text_part(child, depth + 1)
            if found is not None:
                return found
        return None
    if part.maintype == "text" and part.subtype in ("plain", "html") and not _attachment(part):
        return part
    return None


def _reader_text(text: str, limit: int = MAX_CHARS) -> str:
    """The first ``limit`` characters of ``text`` without quoted lines and the signature, blank
    runs as one space. Lines are read only until ``limit`` characters are had: a 4 KB message's
    preview took a third of its analysis when every line was read (the words of the lines kept
    are those of their join, as lines are joined by a blank)."""
    words: list[str] = []
    size = -1  # len(" ".join(words))
    for line in text.splitlines():
        if line.rstrip() == "--":
            break  # a signature follows
        if not line.lstrip().startswith(">"):
            found = line.split()
            if found:
                words += found
                size += len(found) + sum(map(len, found))
                if size >= limit:
                    break
    return " ".join(words)[:limit]


def build(raw: bytes, root: Part) -> str:
    """The preview of a message ("" when it has no text)."""
    part = _text_part(root)
    if part is None:
        return ""
    data = decode_body(raw[part.body_start:min(part.end, part.body_start + MAX_PART_BYTES)], part.encoding)
    text = decode_charset(data, param(part.params, "charset"))
    if part.subtype == "html":
        text = html_text(text)
    return _reader_text(text.replace("\x00", ""))

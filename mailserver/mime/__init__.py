"""Message structure computed once at delivery (what IMAP FETCH and SEARCH need), fast.

``analyze(raw)`` is called by every way mail enters the store (SMTP, APPEND, the pipeline), so it
must be cheap: the modern ``email`` API parses only about 1,000 messages per second per core, so
this package parses the raw bytes itself (tests hold it equal to ``email`` with
``policy.default``). Modules: ``headers`` (header blocks, RFC 2047 / 2231), ``wire`` (IMAP
strings), ``envelope``, ``structure`` (part tree, BODY / BODYSTRUCTURE), ``sections``
(BODY[section]), ``search`` (SEARCH text), ``sortkeys`` and ``collation`` (what SORT and THREAD
read), ``preview`` (RFC 8970 PREVIEW).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import preview as _preview
from . import search as _search
from .envelope import envelope
from .sections import fetch_section
from .headers import first_values, scan_header
from .sortkeys import SortFields, sort_fields
from .structure import body_and_structure, parse_message

__all__ = ["Analyzed", "SortFields", "analyze", "sort_fields_of", "make_preview", "fetch_section", "search_matches",
           "header_contains", "header_size"]


@dataclass(frozen=True)
class Analyzed:
    size: int
    #: bytes up to and including the blank line that ends the header
    header_size: int
    #: IMAP ENVELOPE / BODY / BODYSTRUCTURE as sent on the wire (None: not yet computed)
    envelope: str | None = None
    body: str | None = None
    bodystructure: str | None = None
    #: decoded, case-folded text for SEARCH, in the form ``search_matches`` reads (None: not yet computed)
    search_text: str | None = None
    #: what SORT and THREAD read (None: not yet computed)
    sort: SortFields | None = None
    #: RFC 8970 PREVIEW text, at most 256 characters ("" for no text; None: not yet computed)
    preview: str | None = None


def header_size(raw: bytes) -> int:
    return parse_message(raw).body_start


def analyze(raw: bytes) -> Analyzed:
    """Size, header size, ENVELOPE, BODY, BODYSTRUCTURE, SEARCH text, SORT fields and PREVIEW of a
    message. Never raises on any bytes: malformed MIME gives a best-effort structure."""
    raw = bytes(raw)
    root = parse_message(raw)
    body, bodystructure = body_and_structure(raw, root)
    return Analyzed(size=len(raw), header_size=root.body_start,
                    envelope=envelope(root.values, root.address_cache), body=body,
                    bodystructure=bodystructure, search_text=_search.build(raw, root),
                    sort=sort_fields(root.values, root.address_cache), preview=_preview.build(raw, root))


def sort_fields_of(raw: bytes) -> SortFields:
    """The SORT / THREAD fields of a message from its header alone (for an Analyzed made
    without them)."""
    fields, _ = scan_header(raw, 0, len(raw))
    return sort_fields(first_values(fields), {})


def make_preview(raw: bytes) -> str:
    """RFC 8970 PREVIEW of a message not analyzed at delivery (stored before previews were)."""
    raw = bytes(raw)
    return _preview.build(raw, parse_message(raw))


def search_matches(search_text: str | None, key: str, needle: str) -> bool:
    """SEARCH key (subject, from, to, cc, bcc, body, text) with a case-insensitive substring of
    the decoded text; ``search_text`` is Analyzed.search_text."""
    return _search.matches(search_text, key, needle)


def header_contains(raw: bytes, field: str, needle: str) -> bool:
    """SEARCH HEADER field string: a ``field`` of the message header whose decoded value contains
    needle (an empty needle: the field is present)."""
    return _search.header_contains(raw, field, needle)

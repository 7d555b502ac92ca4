"""What ``mailserver.mime.analyze`` would say about a composed notice, without parsing it.

Every notice of one type from one agency has the same skeleton (``compose``): the same header
fields in the same order, one multipart/alternative of a base64 text/plain and a base64
text/html part. So its ENVELOPE, BODY, BODYSTRUCTURE and SEARCH text are fixed pieces, made once
per drop from the skeleton, plus a few per-row values (the To and Subject values, Date,
Message-ID, boundary, the parts' sizes and line counts, the text the citizen reads). The pieces
go through the same ``mailserver.mime`` functions ``analyze`` uses, so the result is equal to
``analyze(raw)`` (tests check it over every sample drop and generated rows); a notice outside
what this module knows (an HTML part ten times its text part, a body over the search limit)
takes ``analyze`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from mailserver.mime import Analyzed, analyze
from mailserver.mime.envelope import address_list, parse_addresses
from mailserver.mime.headers import decode_words
from mailserver.mime.search import MAX_BODY_CHARS, MAX_PART_BYTES, SEPARATOR, address_text, normalize
from mailserver.mime.sortkeys import sort_fields
from mailserver.mime.wire import string

NIL = "NIL"
TEXT_PART = '("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "BASE64" '
HTML_PART = '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "BASE64" '
NO_EXTENSION = " NIL NIL NIL NIL)"
SIGNATURE_BODY = '("APPLICATION" "PKCS7-SIGNATURE" ("NAME" "smime.p7s") NIL NIL "BASE64" '
SIGNATURE_EXTENSION = ' NIL ("ATTACHMENT" ("FILENAME" "smime.p7s")) NIL NIL)'
SIGNED_PARAMS = '"SIGNED" ("PROTOCOL" "application/pkcs7-signature" "MICALG" "sha-256" "BOUNDARY" '


@dataclass(frozen=True)
class ComposedNotice:
    """A composed notice and the per-row values its structure is made of (``compose`` fills it)."""

    raw: bytes
    #: bytes up to and including the blank line that ends the header
    header_size: int
    #: header values as carried (folded lines included)
    to_value: str
    subject_value: str
    date: str
    message_id: str
    boundary: str
    content_type: str
    #: the base64 bodies as carried, each ending in CRLF
    text_b64: str
    html_b64: str
    #: the text part's decoded text (CRLF line ends): what SEARCH BODY finds
    text: str


def _unfold(value: str) -> str:
    """What ``mailserver.mime.headers`` does to a field value: line breaks out, blanks kept."""
    return value.replace("\r\n", "").strip(" \t\r\n") if "\n" in value else value.strip(" \t\r\n")


def _part_size_lines(b64: str) -> tuple[int, int]:
    # The CRLF before the next delimiter belongs to the delimiter (RFC 2046 5.1.1); every
    # line, the last included, is one base64 line.
    return len(b64) - 2, b64.count("\n")


class NoticeStructure:
    """The fixed pieces of one skeleton's structure (From, trace header, fixed fields)."""

    def __init__(self, from_value: str, trace_header: bytes, fixed_headers: str) -> None:
        from_addresses = parse_addresses(_unfold(from_value))
        self.from_value = _unfold(from_value).encode("utf-8")
        self.from_addresses = from_addresses
        self.from_list = address_list(from_addresses)
        self.from_text = normalize(address_text(from_addresses))
        self.trace = trace_header.decode("ascii")
        self.trace_size = len(trace_header)
        self.fixed_headers = fixed_headers

    def analyzed(self, notice: ComposedNotice, signed=None) -> Analyzed:
        """Equal to ``analyze(trace_header + notice.raw)``, or with ``signed`` (a
        ``sign.SignedNotice`` of this notice) to ``analyze(trace_header + signed.raw)``."""
        text_size, text_lines = _part_size_lines(notice.text_b64)
        html_size, html_lines = _part_size_lines(notice.html_b64)
        raw = notice.raw if signed is None else signed.raw
        if text_size * 10 < html_size or text_size > MAX_PART_BYTES or len(notice.text) > MAX_BODY_CHARS:
            return analyze(self.trace.encode("ascii") + raw)  # search would index both parts
        subject = _unfold(notice.subject_value)
        to = parse_addresses(_unfold(notice.to_value))
        envelope = (f"({string(notice.date)} {string(subject)} {self.from_list} {self.from_list} {self.from_list} "
                    f"{address_list(to)} NIL NIL NIL {string(notice.message_id)})")
        text_part = f"{TEXT_PART}{text_size} {text_lines}"
        html_part = f"{HTML_PART}{html_size} {html_lines}"
        body = f"({text_part}){html_part}) \"ALTERNATIVE\")"
        bodystructure = (f"({text_part}{NO_EXTENSION}{html_part}{NO_EXTENSION} \"ALTERNATIVE\" "
                         f"(\"BOUNDARY\" {string(notice.boundary)}) NIL NIL NIL)")
        content_type, header_size = notice.content_type, notice.header_size
        if signed is not None:  # multipart/signed (sign.py) of that entity and the signature
            signature = f"{SIGNATURE_BODY}{len(signed.signature_b64) - 2}"
            body = f"({body}{signature}) \"SIGNED\")"
            bodystructure = (f"({bodystructure}{signature}{SIGNATURE_EXTENSION} {SIGNED_PARAMS}"
                             f"{string(signed.boundary)}) NIL NIL NIL)")
            content_type, header_size = signed.content_type, signed.header_size
        other_fields = (f"{self.trace}Date: {notice.date}\r\nMessage-ID: {notice.message_id}\r\n"
                        f"{self.fixed_headers}{content_type}\r\n")
        search_text = SEPARATOR.join((
            normalize(decode_words(subject)), self.from_text, normalize(address_text(to)), "", "",
            normalize(decode_words(other_fields)), normalize(notice.text),
        ))
        # SORT / THREAD: the fields that vary by row, and From (the fixed headers name none of them)
        values = {"from": self.from_value, "to": _unfold(notice.to_value).encode("utf-8"),
                  "subject": subject.encode("utf-8"), "date": notice.date.encode("utf-8"),
                  "message-id": notice.message_id.encode("utf-8")}
        sort = sort_fields(values, {"from": self.from_addresses, "to": to})
        return Analyzed(size=self.trace_size + len(raw), header_size=self.trace_size + header_size,
                        envelope=envelope, body=body, bodystructure=bodystructure, search_text=search_text,
                        sort=sort)

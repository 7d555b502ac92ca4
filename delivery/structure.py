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

import base64
import re
from typing import NamedTuple

from mailserver.identity.smime import B64_LINE
from mailserver.mime import Analyzed, analyze
from mailserver.mime.envelope import Address, address_list, parse_addresses
from mailserver.mime.headers import cached_if_short, decode_words
from mailserver.mime.search import MAX_BODY_CHARS, MAX_PART_BYTES, SEPARATOR, address_text, normalize
from mailserver.mime.sortkeys import key, message_ids, sort_fields
from mailserver.mime.wire import string

NIL = "NIL"
TEXT_PART = '("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "BASE64" '
HTML_PART = '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "BASE64" '
NO_EXTENSION = " NIL NIL NIL NIL)"
SIGNATURE_BODY = '("APPLICATION" "PKCS7-SIGNATURE" ("NAME" "smime.p7s") NIL NIL "BASE64" '
SIGNATURE_EXTENSION = ' NIL ("ATTACHMENT" ("FILENAME" "smime.p7s")) NIL NIL)'
SIGNED_PARAMS = '"SIGNED" ("PROTOCOL" "application/pkcs7-signature" "MICALG" "sha-256" "BOUNDARY" '


class ComposedNotice(NamedTuple):
    """A composed notice and the per-row values its structure is made of (``compose`` fills it;
    a tuple: made for every notice, at a third of a frozen dataclass's cost)."""

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
    #: the To display name as given (before encoding), "" if not known
    to_name: str = ""
    #: the To address as given, "" if not known
    to_address: str = ""


def _unfold(value: str) -> str:
    """What ``mailserver.mime.headers`` does to a field value: line breaks out, blanks kept."""
    return value.replace("\r\n", "").strip(" \t\r\n") if "\n" in value else value.strip(" \t\r\n")


def _part_size_lines(b64: str) -> tuple[int, int]:
    # The CRLF before the next delimiter belongs to the delimiter (RFC 2046 5.1.1); every
    # line, the last included, is one base64 line. ``b64`` is ``base64_lines``' (compose): every
    # line but the last has B64_LINE characters and its CRLF, so the lines are counted from the
    # length instead of character by character.
    return len(b64) - 2, (len(b64) + B64_LINE + 1) // (B64_LINE + 2)


class NoticeStructure:
    """The fixed pieces of one skeleton's structure (From, trace header, fixed fields), and the
    pieces that depend only on the Date (one per compose call) or the Subject (shared by many
    notices of a drop), each made once."""

    def __init__(self, from_value: str, trace_header: bytes, fixed_headers: str) -> None:
        from_addresses = parse_addresses(_unfold(from_value))
        self.from_value = _unfold(from_value).encode("utf-8")
        self.from_addresses = from_addresses
        self.from_list = address_list(from_addresses)
        self.from_text = normalize(address_text(from_addresses))
        self.trace = trace_header.decode("ascii")
        self.trace_size = len(trace_header)
        self.fixed_headers = fixed_headers
        #: the search text of the fixed fields (the per-row ones beside them are plain ASCII tokens)
        self.fixed_text = normalize(decode_words(fixed_headers))
        #: the sort fields that come from From (and the absent Cc, References, In-Reply-To)
        self.from_sort = sort_fields({"from": self.from_value}, {"from": from_addresses})
        self._date: tuple[str, str, str, int | None] | None = None

    def _date_pieces(self, date: str) -> tuple[str, str, str, int | None]:
        """(date, its IMAP string, the search text of the trace header and Date field, its sort
        value): the same for every notice of a compose call."""
        if self._date is None or self._date[0] != date:
            self._date = (date, string(date), normalize(decode_words(f"{self.trace}Date: {date}\r\n")),
                          sort_fields({"date": date.encode("utf-8")}, {}).date)
        return self._date

    def analyzed(self, notice: ComposedNotice, signed=None) -> Analyzed:
        """Equal to ``analyze(trace_header + notice.raw)``, or with ``signed`` (a
        ``sign.SignedNotice`` of this notice) to ``analyze(trace_header + signed.raw)``."""
        text_size, text_lines = _part_size_lines(notice.text_b64)
        html_size, html_lines = _part_size_lines(notice.html_b64)
        raw = notice.raw if signed is None else signed.raw
        if (text_size * 10 < html_size or text_size > MAX_PART_BYTES or len(notice.text) > MAX_BODY_CHARS
                or "=?" in notice.message_id or "=?" in notice.content_type
                or (signed is not None and "=?" in signed.content_type)):
            return analyze(self.trace.encode("ascii") + raw)  # search would index both parts
        _, date_string, date_text, date_sort = self._date_pieces(notice.date)
        subject, subject_string, subject_text, subject_sort, reply = _subject_pieces(notice.subject_value)
        to_list, to_text, to_key, display_to = _to_fields(notice)
        envelope = (f"({date_string} {subject_string} {self.from_list} {self.from_list} {self.from_list} "
                    f"{to_list} NIL NIL NIL {string(notice.message_id)})")
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
        # the other fields: trace, Date, Message-ID, the fixed ones, Content-Type; each ends in a
        # line break, so their search text is the pieces' texts joined by one blank
        other_text = " ".join(t for t in (date_text, normalize(f"Message-ID: {notice.message_id}"), self.fixed_text,
                                          normalize(content_type)) if t)
        search_text = SEPARATOR.join((
            subject_text, self.from_text, to_text, "", "", other_text, normalize(notice.text),
        ))
        # SORT / THREAD: From's fields made once, To's and the Message-ID per row
        ids = message_ids(notice.message_id)
        sort = self.from_sort._replace(subject=subject_sort, reply=reply, date=date_sort, to=to_key,
                                       display_to=display_to, message_id=ids[0] if ids else None)
        return Analyzed(size=self.trace_size + len(raw), header_size=self.trace_size + header_size,
                        envelope=envelope, body=body, bodystructure=bodystructure, search_text=search_text,
                        sort=sort)


#: an address ``parse_addresses`` takes whole as mailbox@host (``SIMPLE_ADDRESS``, nothing ``TRICKY``)
_PLAIN_ADDRESS = re.compile(r'[^\s<>@,"()\\:;\[]+@[^\s<>@,"()\\:;\[]+').fullmatch


def _name_word(name: str) -> str:
    """The one encoded word compose makes of a short display name (``compose._address``)."""
    return f"=?utf-8?b?{base64.b64encode(name.encode('utf-8')).decode('ascii')}?="


def _to_fields(notice: ComposedNotice) -> tuple[str, str, str, str]:
    """(ENVELOPE address list, search text, sort key, sort display key) of the To field. The To
    compose makes of nearly every citizen (``word <box@host>``: the name one encoded word of its
    UTF-8, the address plain) is known from the name and address it was made of, without parsing
    the field (what ``parse_addresses`` would find: tests hold the two equal); any other goes
    through the parser."""
    name, address, value = notice.to_name, notice.to_address, notice.to_value
    if (address and value.endswith(f" <{address}>") and _PLAIN_ADDRESS(address) and "=?" not in address
            and name.isprintable() and value[:-len(address) - 3] == _name_word(name)):
        mailbox, _, host = address.partition("@")
        pieces = _named_pieces(name, mailbox, host)
        if pieces is not None:
            return (address_list([Address(value[:-len(address) - 3], None, mailbox, host)]), *pieces)
    value = _unfold(value)
    to = parse_addresses(value)
    return (address_list(to), *_to_pieces(to, value, name))


def _named_pieces(name: str, mailbox: str, host: str) -> tuple[str, str, str] | None:
    """(search text, sort key, sort display key) of a To of one address whose display name went
    out as one encoded word of ``name`` (``_name_word``); None if the name is blank."""
    display = " ".join(name.split())
    if not display:
        return None
    return normalize(f"{name} <{mailbox}@{host}>"), key(mailbox), key(display)


def _to_pieces(to: list[Address], to_value: str, name: str) -> tuple[str, str, str]:
    """(search text, sort key, sort display key) of the To field. A name that went out as one
    encoded word of its UTF-8 (nearly every citizen's) is known without decoding the word."""
    if (len(to) == 1 and to[0].host and to[0].mailbox and "=?" not in to[0].mailbox and name.isprintable()
            and to[0].name == _name_word(name)):
        pieces = _named_pieces(name, to[0].mailbox, to[0].host)
        if pieces is not None:
            return pieces
    by_to = sort_fields({"to": to_value.encode("utf-8")}, {"to": to})
    return normalize(address_text(to)), by_to.to, by_to.display_to


@cached_if_short(maxsize=1024, limit=256)  # the notices of a drop share few subjects (dates, amounts)
def _subject_pieces(value: str) -> tuple[str, str, str, str, bool]:
    """(the Subject unfolded, its IMAP string, its search text, its base subject, reply) from the
    value as carried."""
    subject = _unfold(value)
    by_subject = sort_fields({"subject": subject.encode("utf-8")}, {})
    return subject, string(subject), normalize(decode_words(subject)), by_subject.subject, by_subject.reply

"""Stage `compose`: the standard message a citizen receives, assembled fast.

``EmailMessage`` composes only a few hundred such messages per second per core; this module
assembles the same message from a skeleton made once per notice type, with the stdlib's own
encoders (``email.header`` for RFC 2047 words, ``email.utils.formataddr``, ``base64``).
``compose_slow`` builds the same notice with ``EmailMessage``: it is the oracle the tests compare
every fast notice against (same headers, same parts, no defects).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email import policy
from email.utils import formataddr
from urllib.parse import quote

from mailserver.identity.addresses import statements_address
from mailserver.identity.smime import B64_LINE, base64_lines  # noqa: F401  (B64_LINE: the tests')
from mailserver.mime.headers import cached_if_short

from .catalog import NoticeDefinition
from .render import AgencyInfo, Rendered
from .structure import ComposedNotice

CRLF = "\r\n"


def message_id(key: str, notice_type: str, domain: str) -> str:
    """Derived from the idempotency key: the same notice always has the same Message-ID."""
    return f"<{key[:24]}.{notice_type}@{domain}>"


def boundary(key: str) -> str:
    # "=_" never occurs inside base64 text, so the boundary cannot collide with a body.
    return f"=_civicmail_{key[:24]}"


#: bytes of UTF-8 per RFC 2047 "B" word: 45 bytes -> 60 base64 characters -> a 72-character word
WORD_BYTES = 45


def encoded_words(value: str, first_bytes: int = WORD_BYTES) -> str:
    """``value`` as RFC 2047 base64 words (each at most 75 characters, never splitting a
    character), one per folded line. What ``email.header.Header`` does, a few times faster:
    the UTF-8 bytes are cut at the last character start within each word's byte budget."""
    data = value.encode("utf-8")
    words, start, limit = [], 0, first_bytes
    while len(data) - start > limit:
        cut = start + limit
        while data[cut] & 0xC0 == 0x80:  # a continuation byte: the character starts earlier
            cut -= 1
        if cut == start:  # (a budget smaller than one character: take the character whole)
            cut = start + 1
            while cut < len(data) and data[cut] & 0xC0 == 0x80:
                cut += 1
        words.append(data[start:cut])
        start, limit = cut, WORD_BYTES
    words.append(data[start:])
    return (CRLF + " ").join(f"=?utf-8?b?{binascii.b2a_base64(w, newline=False).decode('ascii')}?=" for w in words)


def encoded_words_reference(value: str, first_bytes: int = WORD_BYTES) -> str:
    """encoded_words character by character: the reference the tests hold it to."""
    words, chunk, size, limit = [], [], 0, first_bytes
    for ch in value:
        n = len(ch.encode("utf-8"))
        if size + n > limit and chunk:
            words.append("".join(chunk))
            chunk, size, limit = [], 0, WORD_BYTES
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    return (CRLF + " ").join(f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


@cached_if_short(maxsize=1024, limit=256)  # the notices of a drop share few subjects
def _subject_field(value: str) -> str:
    return _encode_header("Subject", value)


def _encode_header(name: str, value: str) -> str:
    if value.isascii():
        return f"{name}: {value}"
    # The first word shares its line with the field name: keep that line within 78 characters.
    return f"{name}: " + encoded_words(value, WORD_BYTES - 3 * ((len(name) + 2 + 2) // 4 + 1))


def _address(header: str, name: str, address: str) -> str:
    """``Name <addr>``; a non-ASCII name as RFC 2047 words of at most 75 characters each
    (``formataddr`` would make one over-long word). Short names (up to 15 Chinese characters:
    nearly all) take one word; longer ones are split exactly as ``email.header`` splits them."""
    if name.isascii():
        return formataddr((name, address))
    if len(name.encode("utf-8")) <= WORD_BYTES - 6:
        return f"=?utf-8?b?{base64.b64encode(name.encode('utf-8')).decode('ascii')}?= <{address}>"
    return Header(name, "utf-8", header_name=header).encode(linesep=CRLF) + f" <{address}>"


def _lines_crlf(text: str) -> str:
    """What ``EmailMessage.set_content`` does to text: CRLF line ends and a final line end."""
    return CRLF.join(text.splitlines()) + CRLF


#: base64 bodies in lines of B64_LINE characters (RFC 2045 6.8), as ``base64.encodebytes`` makes them
#: (the signature part of a signed notice is made by the same function)
_base64_lines = base64_lines


def _base64_body(text: str) -> str:
    return _base64_lines(_lines_crlf(text).encode("utf-8"))


@dataclass(frozen=True)
class Skeleton:
    """What is the same in every notice of one type from one agency: made once per run."""

    definition: NoticeDefinition
    agency: AgencyInfo
    domain: str
    from_header: str
    fixed_headers: str

    @classmethod
    def build(cls, definition: NoticeDefinition, agency: AgencyInfo, domain: str) -> "Skeleton":
        fixed = [
            "MIME-Version: 1.0",
            "Auto-Submitted: auto-generated",
            f"X-Civicmail-Notice-Type: {definition.id}",
        ]
        if not definition.mandatory:
            fixed.append(f"List-Unsubscribe: {list_unsubscribe(definition, domain)}")
        return cls(definition, agency, domain, "From: " + _address("From", agency.name, agency.sender),
                   CRLF.join(fixed) + CRLF)


def list_unsubscribe(definition: NoticeDefinition, domain: str) -> str:
    """Only optional statements carry it (NOTICES.md); a mail to the opt-out address with the
    type in the subject (the citizen-services part answers it)."""
    return f"<mailto:{statements_address(domain)}?subject={quote(definition.opt_out_subject)}>"


def compose(skel: Skeleton, rendered: Rendered, to_name: str, to_address: str, key: str, date: str) -> bytes:
    """The notice as RFC 5322 bytes, CRLF line ends, 7-bit clean."""
    return compose_notice(skel, rendered, to_name, to_address, key, date).raw


def compose_notice(skel: Skeleton, rendered: Rendered, to_name: str, to_address: str, key: str,
                   date: str) -> ComposedNotice:
    """``compose``, keeping the per-row values its structure is made of (``structure``)."""
    b = boundary(key)
    to_value = _address("To", to_name, to_address)
    subject_field = _subject_field(rendered.subject)
    msgid = message_id(key, skel.definition.id, skel.domain)
    content_type = f'Content-Type: multipart/alternative; boundary="{b}"'
    head = CRLF.join((
        skel.from_header,
        "To: " + to_value,
        subject_field,
        f"Date: {date}",
        f"Message-ID: {msgid}",
    )) + CRLF + skel.fixed_headers + content_type + CRLF + CRLF
    text = _lines_crlf(rendered.text)
    text_b64 = _base64_lines(text.encode("utf-8"))
    html_b64 = _base64_body(rendered.html)
    body = (
        f"--{b}{CRLF}Content-Type: text/plain; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{text_b64}"
        f"--{b}{CRLF}Content-Type: text/html; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{html_b64}"
        f"--{b}--{CRLF}"
    )
    return ComposedNotice(raw=(head + body).encode("ascii"), header_size=len(head), to_value=to_value,
                          subject_value=subject_field[len("Subject: "):], date=date, message_id=msgid, boundary=b,
                          content_type=content_type, text_b64=text_b64, html_b64=html_b64, text=text,
                          to_name=to_name, to_address=to_address)


def compose_slow(skel: Skeleton, rendered: Rendered, to_name: str, to_address: str, key: str,
                 date: str) -> EmailMessage:
    """The same notice the slow, obviously-correct way (the test oracle)."""
    msg = EmailMessage(policy=policy.SMTP)
    local, _, domain = skel.agency.sender.partition("@")
    msg["From"] = Address(skel.agency.name, local, domain)
    local, _, domain = to_address.partition("@")
    msg["To"] = Address(to_name, local, domain)
    msg["Subject"] = rendered.subject
    msg["Date"] = date
    msg["Message-ID"] = message_id(key, skel.definition.id, skel.domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Civicmail-Notice-Type"] = skel.definition.id
    if not skel.definition.mandatory:
        msg["List-Unsubscribe"] = list_unsubscribe(skel.definition, skel.domain)
    msg.set_content(rendered.text, cte="base64")
    msg.add_alternative(rendered.html, subtype="html", cte="base64")
    return msg

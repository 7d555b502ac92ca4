"""Stage `compose`: the standard message a citizen receives, assembled fast.

``EmailMessage`` composes only a few hundred such messages per second per core; this module
assembles the same message from a skeleton made once per notice type, with the stdlib's own
encoders (``email.header`` for RFC 2047 words, ``email.utils.formataddr``, ``base64``).
``compose_slow`` builds the same notice with ``EmailMessage``: it is the oracle the tests compare
every fast notice against (same headers, same parts, no defects).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email import policy
from email.utils import formataddr

from .catalog import NoticeDefinition
from .render import AgencyInfo, Rendered

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
    character), one per folded line. What ``email.header.Header`` does, a few times faster."""
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


def _base64_body(text: str) -> str:
    return base64.encodebytes(_lines_crlf(text).encode("utf-8")).decode("ascii").replace("\n", CRLF)


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
    return f"<mailto:unsubscribe@{domain}?subject=unsubscribe%20{definition.id}>"


def compose(skel: Skeleton, rendered: Rendered, to_name: str, to_address: str, key: str, date: str) -> bytes:
    """The notice as RFC 5322 bytes, CRLF line ends, 7-bit clean."""
    b = boundary(key)
    head = CRLF.join((
        skel.from_header,
        "To: " + _address("To", to_name, to_address),
        _encode_header("Subject", rendered.subject),
        f"Date: {date}",
        f"Message-ID: {message_id(key, skel.definition.id, skel.domain)}",
    )) + CRLF + skel.fixed_headers + f'Content-Type: multipart/alternative; boundary="{b}"' + CRLF + CRLF
    body = (
        f"--{b}{CRLF}Content-Type: text/plain; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{_base64_body(rendered.text)}"
        f"--{b}{CRLF}Content-Type: text/html; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{_base64_body(rendered.html)}"
        f"--{b}--{CRLF}"
    )
    return (head + body).encode("ascii")


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

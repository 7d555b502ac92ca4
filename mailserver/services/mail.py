"""Reading service mail and writing the answers (stdlib ``email``: not a hot path).

Who sent a message is known ONLY from ``X-Civicmail-Authenticated``, which SMTP submission adds
to authenticated mail and strips from everything else. A ``From:`` alone proves nothing.
"""
from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage

from ..store.addressing import split_detail

TRUSTED_HEADER = "X-Civicmail-Authenticated"
POLICY = email.policy.default.clone(linesep="\r\n")


@dataclass
class Inbound:
    """One message in a service account's INBOX, read once."""

    message_id: int  # the store's message row
    account_id: int
    address: str  # the service account's address
    kind: str
    ref: str
    raw: bytes
    msg: EmailMessage = field(repr=False)
    #: the verified sender: "citizen" / "agency" and the address or agency id; None if unverified
    verified_kind: str | None = None
    verified: str | None = None

    @property
    def subject(self) -> str:
        return str(self.msg.get("Subject", "") or "").strip()

    @property
    def header_message_id(self) -> str:
        return str(self.msg.get("Message-ID", "") or "").strip()

    @property
    def references(self) -> list[str]:
        """The thread so far: References, else In-Reply-To, as message-id tokens."""
        refs = str(self.msg.get("References", "") or "") or str(self.msg.get("In-Reply-To", "") or "")
        return re.findall(r"<[^<>\s]+>", refs)

    def detail(self) -> str:
        """The ``+detail`` the sender wrote after this service's address (RFC 5233)."""
        for name in ("Delivered-To", "X-Original-To", "To", "Cc"):
            values = self.msg.get_all(name) or []
            for _, addr in email.utils.getaddresses([str(v) for v in values]):
                base, detail = split_detail(addr)
                if base == self.address and detail:
                    return detail
        for value in self.msg.get_all("Received") or []:  # "for <rcpt>" on a single-recipient message
            m = re.search(r"\bfor\s+<([^>]+)>", str(value))
            if m:
                base, detail = split_detail(m.group(1))
                if base == self.address and detail:
                    return detail
        return ""

    def text(self) -> str:
        """The text the sender wrote: the plain part, else the HTML part with tags removed."""
        try:
            part = self.msg.get_body(preferencelist=("plain", "html"))
            if part is None:
                return ""
            content = part.get_content()
        except (LookupError, UnicodeError, AttributeError, ValueError):
            return ""
        if not isinstance(content, str):
            return ""
        if part.get_content_subtype() == "html":
            content = re.sub(r"(?is)<(script|style).*?</\1>", "", content)
            # quoted mail in HTML replies is a <blockquote> (innermost first, for nesting)
            while True:
                stripped = re.sub(r"(?is)<blockquote\b[^>]*>(?:(?!<blockquote\b).)*?</blockquote>", "", content)
                if stripped == content:
                    break
                content = stripped
            content = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", content)
            content = re.sub(r"<[^>]+>", "", content)
            import html

            content = html.unescape(content)
        return content


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=POLICY)  # type: ignore[return-value]


def is_automatic(msg: EmailMessage) -> bool:
    """Sent by a program, not a person (RFC 3834 Auto-Submitted, or bulk/list precedence)."""
    auto = str(msg.get("Auto-Submitted", "no") or "no").strip().lower()
    precedence = str(msg.get("Precedence", "") or "").strip().lower()
    return not auto.startswith("no") or precedence in ("bulk", "junk", "list")


def verified_sender(msg: EmailMessage) -> tuple[str | None, str | None]:
    """("citizen", address) or ("agency", id) from the trusted header; (None, None) if absent
    or ambiguous (SMTP writes exactly one)."""
    values = msg.get_all(TRUSTED_HEADER) or []
    if len(values) != 1:
        return None, None
    kind, sep, who = str(values[0]).strip().partition("=")
    if not sep or kind not in ("citizen", "agency") or not who.strip():
        return None, None
    return kind, who.strip().lower()


def compose(*, sender: str, sender_name: str, to: str, subject: str, text: str, html: str | None = None,
            domain: str, in_reply_to: str | None = None, references: list[str] | None = None,
            extra: dict[str, str] | None = None, auto: str | None = "auto-replied") -> EmailMessage:
    """A reply or notice from a service address to a citizen."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = email.utils.formataddr((sender_name, sender))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        refs = list(references or [])
        if in_reply_to not in refs:
            refs.append(in_reply_to)
        msg["References"] = " ".join(refs)
    if auto:  # RFC 3834: answers from a service are auto-replied, bulletins auto-generated
        msg["Auto-Submitted"] = auto
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(text, charset="utf-8", cte="base64" if not text.isascii() else "7bit")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    return msg


def reply_subject(subject: str) -> str:
    subject = subject.strip()
    return subject if re.match(r"(?i)^(re|回复|答复)\s*[:：]", subject) else f"Re: {subject}" if subject else "Re:"


def rewrite_header(raw: bytes, drop: set[str], prepend: list[tuple[str, str]]) -> bytes:
    """The message with header fields named in ``drop`` (lower-case) removed and ``prepend``
    (name, ASCII or RFC 2047-encoded value) added on top; the rest byte for byte as received."""
    end = raw.find(b"\r\n\r\n")
    head, body = (raw[:end + 2], raw[end + 2:]) if end >= 0 else (raw, b"")
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        skipping = name in drop
        if not skipping:
            kept.append(line)
    top = "".join(f"{name}: {value}\r\n" for name, value in prepend).encode("ascii")
    return top + b"".join(kept) + body


def encoded(value: str) -> str:
    """A header value as RFC 2047 words if it is not ASCII."""
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8", header_name="X-Civicmail-Applicant").encode(linesep="\r\n")

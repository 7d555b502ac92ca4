"""Byte-level header work on the hot path (no full parse: `email` manages ~1,000 messages/s).

What SMTP needs from a message header is small: the From: addresses, one notice-type header,
removal of a header nobody outside may set, and trace headers prepended. All of it works on
the raw header block so that the stored bytes are exactly what the client sent, plus our lines.
"""
from __future__ import annotations

import email.utils
import re
import time

#: the header other parts trust to say who submitted a message; only we may write it
TRUSTED_HEADER = b"x-civicmail-authenticated"
NOTICE_TYPE_HEADER = b"x-civicmail-notice-type"

_FIELD_NAME = re.compile(rb"^([^:\s]+)[ \t]*:", re.ASCII)


def has_bare_line_ending(raw: bytes) -> bool:
    """True if a CR or LF appears other than as CRLF (SMTP smuggling, RFC 5321 2.3.8)."""
    lf = raw.count(b"\n")
    return lf != raw.count(b"\r\n") or raw.count(b"\r") != lf


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, rest from the blank line on)."""
    if raw.startswith(b"\r\n"):
        return b"", raw
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw, b""
    return raw[:end + 2], raw[end + 2:]


def fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, raw field lines incl. continuations and CRLF) in order.

    A line that is neither a field nor a continuation (malformed) keeps its own entry with
    the name b"" so that nothing is lost when the header is written back."""
    out: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            name, text = out[-1]
            out[-1] = (name, text + line)
            continue
        m = _FIELD_NAME.match(line)
        out.append(((m.group(1).lower() if m else b""), line))
    return out


def strip_trusted(raw: bytes) -> bytes:
    """The message without any X-Civicmail-Authenticated field in its header."""
    if TRUSTED_HEADER not in raw[:raw.find(b"\r\n\r\n") + 1 or len(raw)].lower():
        return raw  # the common case: nothing to remove, no copy
    header, body = split_header(raw)
    kept = b"".join(text for name, text in fields(header) if name != TRUSTED_HEADER)
    return kept + body


def field_values(header: bytes, name: bytes) -> list[str]:
    """Unfolded values of every field called ``name`` (lower-case), decoded as UTF-8."""
    out = []
    for fname, text in fields(header):
        if fname == name:
            value = text.split(b":", 1)[1]
            out.append(re.sub(rb"\r\n(?=[ \t])", b"", value).strip().decode("utf-8", "surrogateescape"))
    return out


def from_addresses(header: bytes) -> list[str]:
    """The addr-specs of every From: field, lower-cased (display names may be RFC 2047)."""
    values = field_values(header, b"from")
    return [addr.lower() for _, addr in email.utils.getaddresses(values) if addr]


_date_cache: tuple[int, str] = (0, "")


def _now_rfc5322() -> str:
    """The date for a Received header; formatted once per second (it is on every message)."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.format_datetime(email.utils.localtime()))
    return _date_cache[1]


def trace_headers(*, qid: str, helo: str, client_ip: str, hostname: str, protocol: str, recipients: list[str],
                  auth_identity: str | None, trusted_value: str | None) -> bytes:
    """Received (RFC 5321 4.4), Authentication-Results (RFC 8601) and, for submissions, the
    trusted identity header, to prepend to a stored message."""
    when = _now_rfc5322()
    rcpt = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    helo = re.sub(r"[^A-Za-z0-9.\-\[\]:_]", "?", helo or "unknown")[:255]
    lines = [f"Received: from {helo} ([{client_ip}])\r\n\tby {hostname} (civicmail) with {protocol} id {qid}{rcpt};"
             f"\r\n\t{when}\r\n"]
    if auth_identity:
        lines.append(f"Authentication-Results: {hostname};\r\n\tauth=pass smtp.auth={auth_identity}\r\n")
    else:
        lines.append(f"Authentication-Results: {hostname}; none\r\n")
    if trusted_value:
        lines.append(f"X-Civicmail-Authenticated: {trusted_value}\r\n")
    return "".join(lines).encode("utf-8")

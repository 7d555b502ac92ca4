"""Byte-level header work on the hot path (no full parse: `email` manages ~1,000 messages/s).

What SMTP needs from a message header is small: the From: addresses, one notice-type header,
removal of a header nobody outside may set, and trace headers prepended. All of it works on
the raw header block so that the stored bytes are exactly what the client sent, plus our lines.
"""
from __future__ import annotations

import email.utils
import re
import time

from ..identity.addresses import normalise_domain

#: the header other parts trust to say who submitted a message; only we may write it
TRUSTED_HEADER = b"x-civicmail-authenticated"
NOTICE_TYPE_HEADER = b"x-civicmail-notice-type"
#: our own fields all begin so; nobody outside writes them (see strip_internal)
INTERNAL_PREFIX = b"x-civicmail-"
#: the internal fields an authenticated agency may set: its notice type (checked against its
#: grants, read by the pipeline's drop-by-mail) and the status of its answer to an application
#: (read by services/applications.py)
AGENCY_FIELDS = frozenset((NOTICE_TYPE_HEADER, b"x-civicmail-status"))
AUTH_RESULTS = b"authentication-results"

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


def strip_internal(raw: bytes, authserv_id: str, keep: frozenset[bytes] = frozenset()) -> bytes:
    """The message as it may enter, on any port: without the fields only this server writes.
    Those are every X-Civicmail-* field but the ones named in ``keep`` (the trusted identity is
    never among them), and every Authentication-Results field that claims our ``authserv_id``
    (RFC 8601 5: a border MTA removes them, else our verdict could come from outside);
    another server's Authentication-Results stay."""
    lowered = raw[:raw.find(b"\r\n\r\n") + 1 or len(raw)].lower()
    if INTERNAL_PREFIX not in lowered and AUTH_RESULTS not in lowered:
        return raw  # the common case: nothing to remove, no copy
    ours = normalise_domain(authserv_id)
    keep = keep - {TRUSTED_HEADER}
    header, body = split_header(raw)

    def removed(name: bytes, text: bytes) -> bool:
        if name.startswith(INTERNAL_PREFIX):
            return name not in keep
        if name != AUTH_RESULTS:
            return False
        claimed = authserv_id_of(text)
        return claimed is None or normalise_domain(claimed) == ours

    return b"".join(text for name, text in fields(header) if not removed(name, text)) + body


def authserv_id_of(field: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field (RFC 8601 2.2): the first value after
    the colon, comments (which nest) and white space; a quoted string unquoted. None when it is
    not within the field's first line's worth of octets (RFC 5322: 998): a more patient reader
    could still find ours there, so the caller treats such a field as claiming it. One pass over
    at most that much, however the parentheses nest."""
    whole = field.partition(b":")[2]
    value = whole[:998].decode("utf-8", "replace")
    i, n, depth = 0, len(value), 0
    while i < n:
        ch = value[i]
        if depth and ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and not ch.isspace():
            break
        i += 1
    if i >= n:
        return None
    if value[i] == '"':
        out, i = [], i + 1
        while i < n and value[i] != '"':
            if value[i] == "\\":
                i += 1
            out.append(value[i:i + 1])
            i += 1
        return "".join(out) if i < n else None
    end = i
    while end < n and value[end] not in ";( \t\r\n":
        end += 1
    return value[i:end] if end < n or len(whole) <= 998 else None


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
    """The date for a Received header (and a missing Date:); formatted once per second (it is
    on every message)."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.format_datetime(email.utils.localtime()))
    return _date_cache[1]


def origin_fields(header: bytes, domain: str, qid: str) -> bytes:
    """The Date and Message-ID a submitted message lacks (RFC 6409 8.3, 8.4: a submission
    server adds them), as lines to add to its header; b"" when it has both. The Message-ID is
    ours: the time, the queue id (unique in this process, with a random prefix) and our domain."""
    names = {name for name, _ in fields(header)}
    added = []
    if b"date" not in names:
        added.append(f"Date: {_now_rfc5322()}\r\n")
    if b"message-id" not in names:
        added.append(f"Message-ID: <{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.{qid}@{domain}>\r\n")
    return "".join(added).encode("ascii")


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

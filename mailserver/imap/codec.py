"""Wire encodings: modified UTF-7 mailbox names (RFC 3501 5.1.3), strings, sequence sets, dates."""
from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from dataclasses import dataclass

# -- modified UTF-7 -------------------------------------------------------------------------------


def encode_mailbox(name: str) -> str:
    """Unicode -> modified UTF-7 ("&" shifts into modified base64 of UTF-16BE)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def mailbox_wire(name: str, utf8: bool) -> str:
    """A mailbox name as a session is sent it: modified UTF-7, or as it is in UTF-8 to one that
    enabled UTF8=ACCEPT (RFC 6855 3: such a session is never sent modified UTF-7). Kept for the
    names last sent (LIST and STATUS send the same few of every user again and again)."""
    return astring(name if utf8 else encode_mailbox(name), utf8).decode("utf-8")


class BadMailboxName(ValueError):
    pass


def decode_mailbox(name: str) -> str:
    """Modified UTF-7 -> Unicode. Raises BadMailboxName on bad syntax."""
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                # Some clients send raw UTF-8; accept it rather than refuse a Chinese name.
                out.append(ch)
            else:
                out.append(ch)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            raise BadMailboxName(name)
        chunk = name[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except ValueError:
                raise BadMailboxName(name) from None
        i = end + 1
    return "".join(out)


def canonical_mailbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); everything else is case-sensitive."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name


# -- strings ---------------------------------------------------------------------------------------

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")  # \Z: "$" also matches before a final "\n"
#: RFC 6855 3: to a session that enabled UTF8=ACCEPT, quoted strings may carry UTF-8
_QUOTABLE_UTF8 = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\xff]*\Z")


def astring(value: str | bytes | None, utf8: bool = False) -> bytes:
    """A quoted string where possible, else a literal; None is NIL. ``utf8``: the session has
    enabled UTF8=ACCEPT, so a quoted string may hold UTF-8 (RFC 6855 3)."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) < 1024 and (_QUOTABLE_UTF8 if utf8 else _QUOTABLE).match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


# -- sequence sets -----------------------------------------------------------------------------------

STAR = 0  # "*" before it is resolved


@dataclass(frozen=True)
class SeqSet:
    """RFC 3501 sequence-set: ranges of numbers where STAR stands for the largest in use."""

    ranges: tuple[tuple[int, int], ...]
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "SeqSet":
        if text == "$":  # RFC 5182: the result the last SEARCH RETURN (SAVE) kept
            return cls((), "$")
        ranges = []
        for part in text.split(","):
            lo, sep, hi = part.partition(":")
            a = _seq_number(lo)
            b = _seq_number(hi) if sep else a
            ranges.append((a, b))
        return cls(tuple(ranges), text)

    @property
    def saved(self) -> bool:
        """"$", which names UIDs the session holds (``SelectedFolder.saved``), not numbers."""
        return self.text == "$"

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Concrete ascending, merged ranges; STAR becomes ``largest`` (RFC 3501: n:* = *:n)."""
        spans = []
        for a, b in self.ranges:
            a = largest if a == STAR else a
            b = largest if b == STAR else b
            if a > b:
                a, b = b, a
            spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def __str__(self) -> str:
        return self.text or ",".join(_fmt(a) if a == b else f"{_fmt(a)}:{_fmt(b)}" for a, b in self.ranges)


def _fmt(n: int) -> str:
    return "*" if n == STAR else str(n)


def _seq_number(text: str) -> int:
    if text == "*":
        return STAR
    if not text.isdigit() or text.startswith("0") or len(text) > 10:
        raise ValueError(f"bad sequence number {text!r}")
    n = int(text)
    if n > 0xFFFFFFFF:
        raise ValueError("sequence number out of range")
    return n


def format_uid_set(uids: list[int]) -> str:
    """Compact "1:3,7" form of ascending UIDs (COPYUID, APPENDUID)."""
    parts = []
    start = prev = None
    for u in uids:
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            parts.append(f"{start}" if start == prev else f"{start}:{prev}")
            start = prev = u
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}:{prev}")
    return ",".join(parts)


# -- dates -------------------------------------------------------------------------------------------

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_internaldate(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    off = int(when.utcoffset().total_seconds() // 60)
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} {when.hour:02d}:{when.minute:02d}:"
            f"{when.second:02d} {sign}{off // 60:02d}{off % 60:02d}")


_DATE_TIME = re.compile(r"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\Z")
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")


def _month(name: str) -> int:
    return [m.lower() for m in MONTHS].index(name.lower()) + 1


def parse_date_time(text: str) -> dt.datetime:
    m = _DATE_TIME.match(text)
    if not m:
        raise ValueError("bad date-time")
    d, mon, y, hh, mm, ss, sign, oh, om = m.groups()
    tz = dt.timezone((1 if sign == "+" else -1) * dt.timedelta(hours=int(oh), minutes=int(om)))
    return dt.datetime(int(y), _month(mon), int(d), int(hh), int(mm), int(ss), tzinfo=tz)


def parse_date(text: str) -> dt.date:
    m = _DATE.match(text)
    if not m:
        raise ValueError("bad date")
    return dt.date(int(m.group(3)), _month(m.group(2)), int(m.group(1)))

"""Reading one whole command off the socket, bounded.

A command is a line, or several lines joined by literals: ``... {n}\\r\\n`` + n bytes + the rest.
The framer checks every line against ``imap.max_line_length``, every literal against
``imap.max_literal_size`` and the whole command against a bound *before* reading it: a
synchronising literal over the limit is refused with BAD (the client never sends it, since it
waits for ``+``); a non-synchronising one (LITERAL+) would arrive anyway, so the connection is
closed instead, with nothing of it read. Before login the session passes far smaller limits
(``imap.max_preauth_command_size``; RFC 7888 4), so a client that has not logged in holds a few
KB at most.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable

#: ``{n}``, ``{n+}`` (RFC 7888) and the literal8 ``~{n}`` of RFC 3516, under the same limits
_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})(\+?)\}\r?\n$")
_TAG = re.compile(rb"^([\x21-\x7e]+)")


@dataclass(frozen=True)
class Framed:
    """A complete command's bytes, ready for ``parser.parse_command``."""

    data: bytes
    #: bytes of its lines, its literals left out: what the parser reads token by token
    text_size: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Refused:
    """The command cannot be read: answer BAD with ``tag`` (and close the connection if ``fatal``)."""

    tag: str
    reason: str
    fatal: bool = False


class Closed(Exception):
    """The client went away."""


async def read_line(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """One line including its LF; None if it was longer than ``limit`` (it is consumed)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise Closed() from None
    except asyncio.LimitOverrunError as exc:
        # Discard the over-long line in bounded pieces, up to and including its LF.
        consumed = exc.consumed
        while True:
            if consumed:
                await reader.readexactly(consumed)
            try:
                await reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as again:
                consumed = again.consumed
            except asyncio.IncompleteReadError:
                raise Closed() from None
    if len(line) > limit:
        return None
    return line


async def read_command(reader: asyncio.StreamReader, max_line: int, max_literal: int,
                       continuation: Callable[[], Awaitable[None]], max_command: int | None = None) -> Framed | Refused:
    """One command, its lines and literals together at most ``max_command`` bytes (default: one
    literal and four lines)."""
    if max_command is None:
        max_command = max_literal + max_line * 4
    parts: list[bytes] = []
    total = text = 0
    while True:
        line = await read_line(reader, max_line)
        if line is None:
            tag = _tag(parts[0] if parts else b"")
            return Refused(tag, "line too long")
        parts.append(line)
        total += len(line)
        text += len(line)
        m = _LITERAL_AT_END.search(line)
        if not m:
            return Framed(b"".join(parts), text)
        size = int(m.group(1))
        sync = not m.group(2)
        if size > max_literal or total + size > max_command:
            return Refused(_tag(parts[0]), "literal too large", fatal=not sync)
        if sync:
            await continuation()
        try:
            parts.append(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            raise Closed() from None
        total += size


def _tag(first: bytes) -> str:
    m = _TAG.match(first)
    if not m:
        return "*"
    tag = m.group(1).decode("ascii")
    return "*" if any(c in tag for c in '+(){%*"\\') else tag

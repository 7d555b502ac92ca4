"""Tokens of one IMAP command: atoms, strings (quoted or literal) and parenthesised lists,
and the small readers the command grammar is built from. Bad input raises ParseError, which
``parser.parse_command`` turns into an Invalid value."""
from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass

from .codec import BadMailboxName, SeqSet, canonical_mailbox, decode_mailbox


class ParseError(ValueError):
    pass


#: RFC 6855 3: while the session being parsed for has enabled UTF8=ACCEPT, mailbox names are
#: UTF-8 as they are ("&" is an "&"), not modified UTF-7; set by ``parser.parse`` for one command
UTF8_SESSION: ContextVar[bool] = ContextVar("UTF8_SESSION", default=False)


class TooComplex(ParseError):
    """Well-formed, but past one of our limits (imap.max_search_depth, max_search_keys) or naming
    what cannot exist; the message is the Invalid reason that picks the reply."""


@dataclass(frozen=True)
class Atom:
    text: str


@dataclass(frozen=True)
class Str:
    data: bytes
    literal: bool = False
    #: an RFC 3516 literal8 (``~{n}``), which may carry NUL
    binary: bool = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "surrogateescape")


_LITERAL = re.compile(rb"(~?)\{(\d{1,12})(\+?)\}\r\n")
_STOP = b" ()\"{\r\n"
#: a FETCH item whose "[" opens a section, which may hold spaces and parentheses
#: (``BODY[HEADER.FIELDS (From)]``); anywhere else "[" is an atom character (RFC 3501 9, ATOM-CHAR)
_SECTION_START = re.compile(rb"(?:BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\Z", re.IGNORECASE)
#: an atom's run up to the next stop byte or "[" (which may open a section: then byte by byte)
_ATOM_RUN = re.compile(rb'[^ ()"{\r\n\[]*')
#: a quoted string without escapes or line breaks (the others byte by byte)
_PLAIN_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')


def tokenize(buf: bytes, max_depth: int = 64) -> list:
    """Tokens of one command, without its final CRLF; parenthesised lists nest at most
    ``max_depth`` deep (TooComplex past it), so that nothing reading them recurses without bound."""
    pos = 0
    stack: list[list] = [[]]
    n = len(buf)
    while pos < n:
        ch = buf[pos:pos + 1]
        if ch == b" ":
            pos += 1
        elif ch in (b"\r", b"\n"):
            if buf[pos:] not in (b"\r\n", b"\n"):
                raise ParseError("stray line break")
            break
        elif ch == b"(":
            if len(stack) > max_depth:
                raise TooComplex("TOODEEP")
            stack.append([])
            pos += 1
        elif ch == b")":
            if len(stack) == 1:
                raise ParseError("unbalanced )")
            done = stack.pop()
            stack[-1].append(done)
            pos += 1
        elif ch == b'"':
            m = _PLAIN_QUOTED.match(buf, pos)
            if m is not None:
                stack[-1].append(Str(m.group(1)))
                pos = m.end()
                continue
            pos += 1
            out = bytearray()
            while True:
                if pos >= n:
                    raise ParseError("unterminated string")
                c = buf[pos]
                if c == 0x5C:  # backslash
                    if pos + 1 >= n or buf[pos + 1] not in b'"\\':
                        raise ParseError("bad escape in string")
                    out.append(buf[pos + 1])
                    pos += 2
                elif c == 0x22:
                    pos += 1
                    break
                elif c in (0x0D, 0x0A):
                    raise ParseError("line break in quoted string")
                else:
                    out.append(c)
                    pos += 1
            stack[-1].append(Str(bytes(out)))
        elif ch == b"{" or buf.startswith(b"~{", pos):
            m = _LITERAL.match(buf, pos)
            if not m:
                raise ParseError("bad literal")
            size = int(m.group(2))
            start = m.end()
            if start + size > n:
                raise ParseError("literal shorter than announced")
            stack[-1].append(Str(buf[start:start + size], literal=True, binary=bool(m.group(1))))
            pos = start + size
        else:
            start = pos
            depth = 0
            pos = _ATOM_RUN.match(buf, pos).end()
            if pos < n and buf[pos] == 0x5B:  # "[": byte by byte from the start
                pos = start
            while pos < n:
                c = buf[pos:pos + 1]
                if c == b"[" and (depth or _SECTION_START.match(buf, start, pos)):
                    depth += 1
                elif c == b"]" and depth:
                    depth -= 1
                elif depth == 0 and c in _STOP:
                    break
                elif depth and c in (b"\r", b"\n"):
                    raise ParseError("unterminated [")
                pos += 1
            if depth:
                raise ParseError("unterminated [")
            try:
                # RFC 3501 atoms are ASCII, but clients send UTF-8 search words bare; accept them
                # (IMAP4rev2 allows UTF-8 there) and refuse only bytes that are not UTF-8.
                stack[-1].append(Atom(buf[start:pos].decode("utf-8")))
            except UnicodeDecodeError:
                raise ParseError("8-bit characters in an atom") from None
    if len(stack) != 1:
        raise ParseError("unbalanced (")
    return stack[0]


# -- token helpers --------------------------------------------------------------------------------

def read_atom(tok) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("expected an atom")
    return tok.text


def read_astring(tok) -> str:
    if isinstance(tok, Atom):
        return tok.text
    if isinstance(tok, Str):
        try:
            return tok.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("string is not UTF-8") from None
    raise ParseError("expected a string")


def read_nstring(tok) -> str | None:
    if isinstance(tok, Atom) and tok.text.upper() == "NIL":
        return None
    return read_astring(tok)


def read_mailbox(tok) -> str:
    """A mailbox name; one that is not modified UTF-7 (RFC 3501 5.1.3) raises TooComplex("BADNAME"),
    answered with NO: it is well-formed, but no mailbox can have it. Under UTF8=ACCEPT the name
    is taken as it is (``UTF8_SESSION``)."""
    text = read_astring(tok)
    if UTF8_SESSION.get():
        return canonical_mailbox(text)
    try:
        return canonical_mailbox(decode_mailbox(text))
    except BadMailboxName:
        raise TooComplex("BADNAME") from None


def read_pattern(tok) -> str:
    """A LIST / LSUB reference or pattern; one that is not modified UTF-7 is matched as it is
    (it then matches no mailbox whose name needs encoding) rather than refused."""
    text = read_astring(tok)
    if UTF8_SESSION.get():
        return text
    try:
        return decode_mailbox(text)
    except BadMailboxName:
        return text


def read_flags(tok) -> tuple[str, ...]:
    items = tok if isinstance(tok, list) else [tok]
    flags = []
    for t in items:
        f = read_atom(t)
        if f.startswith("\\") and f.lower() not in _SYSTEM_FLAGS:
            raise ParseError(f"unknown system flag {f}")
        flags.append(_SYSTEM_FLAGS.get(f.lower(), f))
    return tuple(flags)


_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")}


def need_args(args: list, count: int) -> None:
    if len(args) != count:
        raise ParseError(f"expected {count} arguments")


def read_seqset(tok) -> SeqSet:
    try:
        return SeqSet.parse(read_atom(tok))
    except ValueError:
        raise ParseError("bad sequence set") from None


#: RFC 7162: a mod-sequence is a positive 63-bit integer
MAX_MODSEQ = (1 << 63) - 1


def read_modseq(tok, zero: bool = False) -> int:
    """mod-sequence-value (1 ..  2^63-1), or mod-sequence-valzer (0 too) when ``zero``."""
    text = read_atom(tok)
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        raise ParseError("bad mod-sequence")
    value = int(text)
    if value > MAX_MODSEQ or (value == 0 and not zero):
        raise ParseError("bad mod-sequence")
    return value


def read_modifiers(tok, allowed: dict[str, bool]) -> dict[str, int]:
    """A parenthesised list of RFC 4466 command modifiers, each a name and a mod-sequence
    (``allowed``: name -> whether 0 is valid). Unknown or repeated modifiers are errors."""
    if not isinstance(tok, list) or not tok or len(tok) % 2:
        raise ParseError("bad modifier list")
    out: dict[str, int] = {}
    for i in range(0, len(tok), 2):
        name = read_atom(tok[i]).upper()
        if name not in allowed or name in out:
            raise ParseError("unknown or repeated modifier")
        out[name] = read_modseq(tok[i + 1], allowed[name])
    return out

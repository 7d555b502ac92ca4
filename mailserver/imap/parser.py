"""From bytes to typed commands. Two layers:

* ``tokenize(buf)``: one complete command (its lines and inline ``{n}\\r\\n`` literals, as the
  framer in ``framing.py`` assembled it) to atoms, strings and parenthesised lists;
* ``parse_command(buf)``: tokens to a Command, or an ``Invalid`` value (answered with BAD).

Nothing here raises on bad input: every failure becomes ``Invalid``.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .codec import BadMailboxName, SeqSet, canonical_mailbox, decode_mailbox, parse_date, parse_date_time
from .commands import (Append, Authenticate, Command, Copy, Enable, Expunge, Fetch, FetchAtt, GetQuota, Id,
                       Invalid, ListCmd, Login, MailboxCommand, Parsed, Rename, Search, SetQuota, Simple, Status,
                       Store)


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class Atom:
    text: str


@dataclass(frozen=True)
class Str:
    data: bytes
    literal: bool = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "surrogateescape")


_LITERAL = re.compile(rb"\{(\d{1,12})(\+?)\}\r\n")
_STOP = b" ()\"{\r\n"


def tokenize(buf: bytes) -> list:
    """Tokens of one command, without its final CRLF."""
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
            stack.append([])
            pos += 1
        elif ch == b")":
            if len(stack) == 1:
                raise ParseError("unbalanced )")
            done = stack.pop()
            stack[-1].append(done)
            pos += 1
        elif ch == b'"':
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
        elif ch == b"{":
            m = _LITERAL.match(buf, pos)
            if not m:
                raise ParseError("bad literal")
            size = int(m.group(1))
            start = m.end()
            if start + size > n:
                raise ParseError("literal shorter than announced")
            stack[-1].append(Str(buf[start:start + size], literal=True))
            pos = start + size
        else:
            start = pos
            depth = 0
            while pos < n:
                c = buf[pos:pos + 1]
                if c == b"[":
                    depth += 1
                elif c == b"]":
                    depth = max(0, depth - 1)
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

def _atom(tok) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("expected an atom")
    return tok.text


def _astring(tok) -> str:
    if isinstance(tok, Atom):
        return tok.text
    if isinstance(tok, Str):
        try:
            return tok.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("string is not UTF-8") from None
    raise ParseError("expected a string")


def _nstring(tok) -> str | None:
    if isinstance(tok, Atom) and tok.text.upper() == "NIL":
        return None
    return _astring(tok)


def _mailbox(tok) -> str:
    try:
        return canonical_mailbox(decode_mailbox(_astring(tok)))
    except BadMailboxName:
        raise ParseError("bad mailbox name") from None


def _flag_list(tok) -> tuple[str, ...]:
    items = tok if isinstance(tok, list) else [tok]
    flags = []
    for t in items:
        f = _atom(t)
        if f.startswith("\\") and f.lower() not in _SYSTEM_FLAGS:
            raise ParseError(f"unknown system flag {f}")
        flags.append(_SYSTEM_FLAGS.get(f.lower(), f))
    return tuple(flags)


_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")}


def _need(args: list, count: int) -> None:
    if len(args) != count:
        raise ParseError(f"expected {count} arguments")


def _seqset(tok) -> SeqSet:
    try:
        return SeqSet.parse(_atom(tok))
    except ValueError:
        raise ParseError("bad sequence set") from None


# -- FETCH items ------------------------------------------------------------------------------------

_SECTION = re.compile(r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?$", re.IGNORECASE)
_SIMPLE_ATTS = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822",
                "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"}
_MACROS = {"ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
           "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
           "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")}


def parse_fetch_att(text: str) -> FetchAtt:
    upper = text.upper()
    if upper in _SIMPLE_ATTS:
        return FetchAtt(upper)
    m = _SECTION.match(text)
    if not m or m.group(1).upper().startswith("BINARY"):
        raise ParseError(f"unknown fetch item {text[:40]}")
    spec = m.group(2)
    part: list[int] = []
    rest = spec
    while rest:
        head, dot, tail = rest.partition(".")
        if head.isdigit() and not head.startswith("0"):
            part.append(int(head))
            rest = tail
            if not dot:
                break
        else:
            break
    fields: tuple[str, ...] = ()
    text_spec = None
    if rest:
        word, _, flist = rest.partition(" ")
        word = word.upper()
        if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            inner = flist.strip()
            if not (inner.startswith("(") and inner.endswith(")")) or not inner[1:-1].strip():
                raise ParseError("bad header field list")
            fields = tuple(f.strip('"').upper() for f in inner[1:-1].split())
        elif flist or word not in ("HEADER", "TEXT", "MIME"):
            raise ParseError("bad section")
        if word == "MIME" and not part:
            raise ParseError("MIME needs a part number")
        text_spec = word
    partial = None
    if m.group(3) is not None:
        partial = (int(m.group(3)), int(m.group(4)))
    return FetchAtt("BODY[]", tuple(part), text_spec, fields, partial, peek=m.group(1).upper() == "BODY.PEEK",
                    section=True)


def _fetch_atts(tok) -> tuple[FetchAtt, ...]:
    if isinstance(tok, Atom) and tok.text.upper() in _MACROS:
        return tuple(FetchAtt(n) for n in _MACROS[tok.text.upper()])
    items = tok if isinstance(tok, list) else [tok]
    if not items:
        raise ParseError("empty fetch list")
    return tuple(parse_fetch_att(_atom(t)) for t in items)


# -- SEARCH ---------------------------------------------------------------------------------------

_NO_ARG = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
           "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_STRING_ARG = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_ARG = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_NUMBER_ARG = {"LARGER", "SMALLER"}


def _search_key(toks: list, i: int, decode) -> tuple[tuple, int]:
    if i >= len(toks):
        raise ParseError("search key missing")
    tok = toks[i]
    if isinstance(tok, list):
        keys = []
        j = 0
        while j < len(tok):
            k, j = _search_key(tok, j, decode)
            keys.append(k)
        if not keys:
            raise ParseError("empty search group")
        return ("AND", tuple(keys)), i + 1
    if isinstance(tok, Str):
        raise ParseError("expected a search key")
    word = tok.text.upper()
    if word in _NO_ARG:
        return (word,), i + 1
    if word in _STRING_ARG:
        if i + 1 >= len(toks):
            raise ParseError("search string missing")
        return (word, decode(toks[i + 1])), i + 2
    if word in ("KEYWORD", "UNKEYWORD"):
        if i + 1 >= len(toks):
            raise ParseError("keyword missing")
        return (word, _atom(toks[i + 1])), i + 2
    if word in _DATE_ARG:
        if i + 1 >= len(toks):
            raise ParseError("date missing")
        try:
            return (word, parse_date(_astring(toks[i + 1]))), i + 2
        except ValueError:
            raise ParseError("bad date") from None
    if word in _NUMBER_ARG:
        if i + 1 >= len(toks):
            raise ParseError("number missing")
        num = _atom(toks[i + 1])
        if not num.isdigit() or len(num) > 19:
            raise ParseError("bad number")
        return (word, int(num)), i + 2
    if word == "HEADER":
        if i + 2 >= len(toks):
            raise ParseError("HEADER needs a field and a string")
        return (word, _astring(toks[i + 1]).upper(), decode(toks[i + 2])), i + 3
    if word == "UID":
        if i + 1 >= len(toks):
            raise ParseError("UID set missing")
        return ("UID", _seqset(toks[i + 1])), i + 2
    if word == "NOT":
        k, j = _search_key(toks, i + 1, decode)
        return ("NOT", k), j
    if word == "OR":
        a, j = _search_key(toks, i + 1, decode)
        b, j = _search_key(toks, j, decode)
        return ("OR", a, b), j
    if word[:1].isdigit() or word[:1] == "*":
        return ("SEQ", _seqset(tok)), i + 1
    raise ParseError(f"unknown search key {word[:20]}")


class BadCharset(ParseError):
    pass


def _parse_search(tag: str, args: list, uid: bool) -> Search:
    charset = None
    return_opts = None
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].text.upper() == "RETURN" and isinstance(args[1], list):
        return_opts = tuple(_atom(t).upper() for t in args[1])
        args = args[2:]
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].text.upper() == "CHARSET":
        charset = _astring(args[1]).upper()
        args = args[2:]
        if charset not in ("UTF-8", "US-ASCII"):
            raise BadCharset(charset)

    def decode(tok) -> str:
        return _astring(tok)

    keys = []
    i = 0
    while i < len(args):
        k, i = _search_key(args, i, decode)
        keys.append(k)
    if not keys:
        raise ParseError("SEARCH needs a key")
    return Search(tag, charset, tuple(keys), uid, return_opts)


# -- commands -------------------------------------------------------------------------------------

_SIMPLE = {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE", "NAMESPACE"}
_ONE_MAILBOX = {"SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"}
_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ"}
_TAG = re.compile(r"^[\x21-\x7e]+$")
_TAG_START = re.compile(rb"^([A-Za-z0-9.\-_!#$&',/:;<=>?@^`|~]+) ")


def parse_command(buf: bytes) -> Parsed:
    """One complete command (as framed) to a Command or Invalid."""
    m = _TAG_START.match(buf)
    tag = m.group(1).decode("ascii") if m else "*"
    try:
        toks = tokenize(buf)
        if not toks or not isinstance(toks[0], Atom):
            raise ParseError("missing tag")
        tag = toks[0].text
        if not _TAG.match(tag) or any(c in tag for c in '+(){%*"\\'):
            tag = "*"
            raise ParseError("bad tag")
        if len(toks) < 2 or not isinstance(toks[1], Atom):
            raise ParseError("missing command")
        return _build(tag, toks[1].text.upper(), toks[2:])
    except BadCharset:
        return Invalid(tag, "BADCHARSET")
    except (ParseError, ValueError, IndexError) as exc:
        return Invalid(tag, str(exc)[:80] or "syntax error")


def _build(tag: str, name: str, args: list) -> Command:
    if name in _SIMPLE:
        _need(args, 0)
        return Simple(tag, name)
    if name == "EXPUNGE":
        _need(args, 0)
        return Expunge(tag)
    if name == "LOGIN":
        _need(args, 2)
        return Login(tag, _astring(args[0]), _astring(args[1]))
    if name == "AUTHENTICATE":
        if len(args) not in (1, 2):
            raise ParseError("AUTHENTICATE mechanism [initial-response]")
        initial = _atom(args[1]) if len(args) == 2 else None
        return Authenticate(tag, _atom(args[0]).upper(), initial)
    if name in _ONE_MAILBOX:
        _need(args, 1)
        return MailboxCommand(tag, name, _mailbox(args[0]))
    if name == "RENAME":
        _need(args, 2)
        return Rename(tag, _mailbox(args[0]), _mailbox(args[1]))
    if name in ("LIST", "LSUB"):
        return _parse_list(tag, args, name == "LSUB")
    if name == "STATUS":
        _need(args, 2)
        if not isinstance(args[1], list) or not args[1]:
            raise ParseError("STATUS needs a list of items")
        items = tuple(_atom(t).upper() for t in args[1])
        if any(i not in _STATUS_ITEMS for i in items):
            raise ParseError("unknown STATUS item")
        return Status(tag, _mailbox(args[0]), items)
    if name == "APPEND":
        return _parse_append(tag, args)
    if name == "UID":
        if not args or not isinstance(args[0], Atom):
            raise ParseError("UID needs a command")
        sub = args[0].text.upper()
        if sub == "EXPUNGE":
            _need(args, 2)
            return Expunge(tag, _seqset(args[1]))
        if sub in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH"):
            return _build_message_cmd(tag, sub, args[1:], True)
        raise ParseError("unknown UID command")
    if name in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH"):
        return _build_message_cmd(tag, name, args, False)
    if name == "ID":
        _need(args, 1)
        if isinstance(args[0], Atom) and args[0].text.upper() == "NIL":
            return Id(tag, None)
        if not isinstance(args[0], list) or len(args[0]) % 2:
            raise ParseError("ID needs NIL or field/value pairs")
        pairs = args[0]
        return Id(tag, tuple((_astring(pairs[i]), _nstring(pairs[i + 1])) for i in range(0, len(pairs), 2)))
    if name == "ENABLE":
        if not args:
            raise ParseError("ENABLE needs capabilities")
        return Enable(tag, tuple(_atom(t).upper() for t in args))
    if name == "GETQUOTA":
        _need(args, 1)
        return GetQuota(tag, _astring(args[0]))
    if name == "SETQUOTA":
        return SetQuota(tag)
    raise ParseError("unknown command")


def _build_message_cmd(tag: str, name: str, args: list, uid: bool) -> Command:
    if name == "SEARCH":
        return _parse_search(tag, args, uid)
    if name == "FETCH":
        if len(args) == 3 and isinstance(args[2], list):
            raise ParseError("FETCH modifiers are not supported")
        _need(args, 2)
        return Fetch(tag, _seqset(args[0]), _fetch_atts(args[1]), uid)
    if name == "STORE":
        if len(args) < 3:
            raise ParseError("STORE set item flags")
        item = _atom(args[1]).upper()
        m = re.match(r"^([+-]?)FLAGS(\.SILENT)?$", item)
        if not m:
            raise ParseError("bad STORE item")
        flags = _flag_list(args[2]) if len(args) == 3 else _flag_list(args[2:])
        if "\\Recent" in flags:
            raise ParseError("\\Recent cannot be stored")
        return Store(tag, _seqset(args[0]), m.group(1), bool(m.group(2)), flags, uid)
    _need(args, 2)
    return Copy(tag, _seqset(args[0]), _mailbox(args[1]), uid, name == "MOVE")


def _parse_list(tag: str, args: list, lsub: bool) -> ListCmd:
    select_opts: tuple[str, ...] = ()
    if args and isinstance(args[0], list) and not lsub:
        select_opts = tuple(_atom(t).upper() for t in args[0])
        args = args[1:]
    return_opts: list[str] = []
    status_items: tuple[str, ...] = ()
    if len(args) >= 4 and isinstance(args[2], Atom) and args[2].text.upper() == "RETURN" and not lsub:
        if not isinstance(args[3], list):
            raise ParseError("RETURN needs a list")
        ret = args[3]
        j = 0
        while j < len(ret):
            opt = _atom(ret[j]).upper()
            if opt == "STATUS":
                if j + 1 >= len(ret) or not isinstance(ret[j + 1], list):
                    raise ParseError("STATUS needs items")
                status_items = tuple(_atom(t).upper() for t in ret[j + 1])
                if any(i not in _STATUS_ITEMS for i in status_items):
                    raise ParseError("unknown STATUS item")
                j += 2
            else:
                return_opts.append(opt)
                j += 1
        args = args[:2]
    _need(args, 2)
    reference = decode_mailbox(_astring(args[0]))
    pat_toks = args[1] if isinstance(args[1], list) else [args[1]]
    if not pat_toks:
        raise ParseError("empty pattern list")
    patterns = tuple(decode_mailbox(_astring(t)) for t in pat_toks)
    return ListCmd(tag, reference, patterns, lsub, select_opts, tuple(return_opts), status_items)


def _parse_append(tag: str, args: list) -> Append:
    if len(args) < 2:
        raise ParseError("APPEND mailbox [flags] [date] message")
    mailbox = _mailbox(args[0])
    rest = args[1:]
    flags: tuple[str, ...] = ()
    date = None
    if rest and isinstance(rest[0], list):
        flags = _flag_list(rest[0])
        if "\\Recent" in flags:
            raise ParseError("\\Recent cannot be appended")
        rest = rest[1:]
    if len(rest) == 2 and isinstance(rest[0], Str) and not rest[0].literal:
        try:
            date = parse_date_time(rest[0].text)
        except ValueError:
            raise ParseError("bad date-time") from None
        rest = rest[1:]
    if len(rest) != 1 or not isinstance(rest[0], Str) or not rest[0].literal:
        raise ParseError("APPEND message must be a literal")
    return Append(tag, mailbox, flags, date, rest[0].data)


def decode_sasl(text: str) -> bytes:
    """Base64 of a SASL response ("=" is the empty response, RFC 4959)."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("bad base64") from None

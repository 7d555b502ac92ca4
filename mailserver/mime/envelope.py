"""RFC 3501 ENVELOPE: header values as the message carries them, address lists split into
(name adl mailbox host), groups marked as RFC 3501 7.4.2 says.

Values stay raw: encoded words are left encoded (the client decodes them), folding is removed.
The address parser is lenient (RFC 5322 plus the obsolete syntax seen in real mail) and never
raises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .headers import text_of
from .wire import NIL, nstring

#: the mailbox for an address that has no domain (the convention of UW-IMAP and Dovecot: a NIL
#: host would read as a group marker)
MISSING_HOST = ".MISSING-HOST-NAME."

ATOM = re.compile(r'[^ \t\r\n"()<>@:;,\[\]]+')
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.S)
LITERAL = re.compile(r"\[(?:[^\]\\]|\\.)*\]?", re.S)
UNESCAPE = re.compile(r"\\(.)", re.S)
SPECIALS = frozenset("<>@:;,")
BLANKS = frozenset(" \t\r\n")


@dataclass(slots=True)
class Address:
    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    def wire(self) -> str:
        return f"({nstring(self.name)} {nstring(self.adl)} {nstring(self.mailbox)} {nstring(self.host)})"


GROUP_END = Address(None, None, None, None)


def _comment(text: str, i: int) -> tuple[str, int]:
    """The (nested) comment starting at text[i] == '(' and the index after it."""
    depth = 0
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if c == "(":
            depth += 1
            if depth > 1:
                out.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                return "".join(out).strip(), i + 1
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out).strip(), n


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text): kind "a" atom or domain literal, "q" quoted string, "c" comment, or the
    special character itself."""
    tokens: list[tuple[str, str]] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in BLANKS:
            i += 1
        elif c in SPECIALS:
            tokens.append((c, c))
            i += 1
        elif c == '"':
            m = QUOTED.match(text, i)
            value = m.group(1)
            tokens.append(("q", UNESCAPE.sub(r"\1", value) if "\\" in value else value))
            i = m.end()
        elif c == "(":
            comment, i = _comment(text, i)
            tokens.append(("c", comment))
        elif c == "[":
            m = LITERAL.match(text, i)
            tokens.append(("a", m.group()))
            i = m.end()
        else:
            m = ATOM.match(text, i)
            if m is None:  # a stray ')' or ']'
                i += 1
                continue
            tokens.append(("a", m.group()))
            i = m.end()
    return tokens


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    words = [v for _, v in tokens]
    return " ".join(words) if words else None


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """(mailbox, host) of ``local@domain`` tokens (the last '@' splits them)."""
    at = max((i for i, (k, _) in enumerate(tokens) if k == "@"), default=-1)
    local = tokens[:at] if at >= 0 else tokens
    domain = tokens[at + 1:] if at >= 0 else []
    mailbox = "".join(v for _, v in local) or None
    host = "".join(v for _, v in domain) or None
    if mailbox is None and host is None:
        return None, None
    return mailbox or "", host or MISSING_HOST


def _mailbox(tokens: list[tuple[str, str]]) -> Address | None:
    """One mailbox: ``phrase <route:local@domain>`` or ``local@domain (comment)``."""
    if not tokens:
        return None
    kinds = [k for k, _ in tokens]
    if "<" in kinds:
        lt = kinds.index("<")
        gt = kinds.index(">", lt) if ">" in kinds[lt:] else len(tokens)
        name = _phrase([t for t in tokens[:lt] if t[0] in "qa"])
        inner = [t for t in tokens[lt + 1:gt] if t[0] != "c"]
        adl = None
        ikinds = [k for k, _ in inner]
        if ":" in ikinds and inner and inner[0][0] == "@":  # obsolete source route @a,@b:
            colon = ikinds.index(":")
            adl = "".join(v for _, v in inner[:colon])
            inner = inner[colon + 1:]
        mailbox, host = _addr_spec(inner)
        if mailbox is None and name is None:
            return None
        return Address(name, adl, mailbox if mailbox is not None else "", host or MISSING_HOST)
    comments = [v for k, v in tokens if k == "c" and v]
    mailbox, host = _addr_spec([t for t in tokens if t[0] != "c"])
    if mailbox is None:
        return None
    return Address(comments[-1] if comments else None, None, mailbox, host)


#: the everyday shapes, ``Name <box@host>`` and ``box@host``, with nothing that needs the parser
#: (no two adjacent parts may match the same blanks: that would backtrack quadratically on long
#: runs of them, and a header value can be megabytes long)
SIMPLE_ADDRESS = re.compile(r"(?:([^<>@,]*)<([^\s<>@,]+)@([^\s<>@,]+)>|\s*([^\s<>@,]+)@([^\s<>@,]+))\s*")
TRICKY = re.compile(r'["()\\:;\[]')


def simple_addresses(value: str) -> list[Address] | None:
    """The addresses if every item has an everyday shape, else None (then the general parser)."""
    out = []
    match = SIMPLE_ADDRESS.fullmatch
    for item in value.split(","):
        m = match(item)
        if m is None:
            return None
        if m.group(2) is not None:
            name = " ".join(m.group(1).split())
            out.append(Address(name or None, None, m.group(2), m.group(3)))
        else:
            out.append(Address(None, None, m.group(4), m.group(5)))
    return out


def parse_addresses(value: str) -> list[Address]:
    """An address-list header value as IMAP addresses (group markers included)."""
    if TRICKY.search(value) is None:
        simple = simple_addresses(value)
        if simple is not None:
            return simple
    return parse_addresses_general(value)


def parse_addresses_general(value: str) -> list[Address]:
    """parse_addresses for any input: RFC 5322 tokens, groups, routes, comments."""
    tokens = _tokens(value)
    out: list[Address] = []
    i = 0
    n = len(tokens)
    in_group = False
    start = 0
    while i <= n:
        kind = tokens[i][0] if i < n else ","
        if kind == "<":  # skip to '>' so ',' and ':' inside the angle brackets do not split
            while i < n and tokens[i][0] != ">":
                i += 1
            i += 1
            continue
        if kind == ":" and not in_group and "<" not in (k for k, _ in tokens[start:i]):
            name = _phrase([t for t in tokens[start:i] if t[0] in "qa"])
            out.append(Address(None, None, name or "", None))
            in_group = True
            start = i + 1
        elif kind in (",", ";"):
            if kind == ";" and not in_group:
                kind = ","
            addr = _mailbox(tokens[start:i])
            if addr is not None:
                out.append(addr)
            if kind == ";":
                out.append(GROUP_END)
                in_group = False
            start = i + 1
        i += 1
    if in_group:
        out.append(GROUP_END)
    return out


def addresses(values: dict[str, bytes], cache: dict[str, list[Address]], name: str) -> list[Address] | None:
    """The parsed addresses of field ``name`` (None if absent), parsed once per message."""
    if name not in values:
        return None
    found = cache.get(name)
    if found is None:
        found = cache[name] = parse_addresses(text_of(values[name]))
    return found


def address_list(found: list[Address] | None) -> str:
    if not found:
        return NIL
    return "(" + "".join(a.wire() for a in found) + ")"


def envelope(values: dict[str, bytes], cache: dict[str, list[Address]]) -> str:
    """The ENVELOPE of a message, from the first value of each of its header fields."""
    def text(name: str) -> str:
        value = values.get(name)
        return nstring(None if value is None else text_of(value))

    def addrs(name: str) -> str:
        return address_list(addresses(values, cache, name))

    from_ = addrs("from")
    sender = addrs("sender")
    reply_to = addrs("reply-to")
    # RFC 3501 7.4.2: absent or empty Sender / Reply-To take the value of From
    if sender == NIL:
        sender = from_
    if reply_to == NIL:
        reply_to = from_
    return (f"({text('date')} {text('subject')} {from_} {sender} {reply_to} "
            f"{addrs('to')} {addrs('cc')} {addrs('bcc')} {text('in-reply-to')} {text('message-id')})")

"""Typed IMAP commands: what the parser yields and the handlers take.

Each command can write itself back to the wire (``to_wire``): the parser's property test
round-trips generated commands through it, and the benchmark's clients use it too.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Union

from .codec import SeqSet, astring, encode_mailbox, format_internaldate

# Search keys as plain tuples: ("SEEN",), ("SUBJECT", "text"), ("NOT", key), ("OR", k1, k2),
# ("AND", (k1, k2, ...)), ("UID", SeqSet), ("SEQ", SeqSet), ("BEFORE", date), ("LARGER", int),
# ("HEADER", field, text), ("MODSEQ", n) (RFC 7162; an entry name and type are read and dropped).
SearchKey = tuple


@dataclass(frozen=True)
class Command:
    tag: str

    name = ""

    def args_wire(self) -> bytes:
        return b""

    def to_wire(self) -> bytes:
        args = self.args_wire()
        return self.tag.encode() + b" " + self.name.encode() + (b" " + args if args else b"") + b"\r\n"


@dataclass(frozen=True)
class Simple(Command):
    """Commands without arguments (CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE, UNSELECT,
    IDLE, NAMESPACE, EXPUNGE)."""

    verb: str = "NOOP"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.verb


@dataclass(frozen=True)
class Login(Command):
    user: str = ""
    password: str = ""
    name = "LOGIN"

    def args_wire(self) -> bytes:
        return astring(self.user) + b" " + astring(self.password)


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str = "PLAIN"
    #: SASL-IR (RFC 4959): base64 text, "=" for an empty response, None if absent
    initial: str | None = None
    name = "AUTHENTICATE"

    def args_wire(self) -> bytes:
        return self.mechanism.encode() + (b" " + self.initial.encode() if self.initial is not None else b"")


@dataclass(frozen=True)
class Qresync:
    """RFC 7162 3.2.5: SELECT/EXAMINE mailbox (QRESYNC (uidvalidity modseq [known-uids]
    [(known-sequence-set known-uid-set)]))."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None
    #: seq-match-data: (message sequence numbers, their UIDs) the client knows
    seq_match: tuple[SeqSet, SeqSet] | None = None

    def wire(self) -> bytes:
        out = f"QRESYNC ({self.uidvalidity} {self.modseq}"
        if self.known_uids is not None:
            out += f" {self.known_uids}"
        if self.seq_match is not None:
            out += f" ({self.seq_match[0]} {self.seq_match[1]})"
        return (out + ")").encode()


@dataclass(frozen=True)
class MailboxCommand(Command):
    """SELECT, EXAMINE, CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT: one mailbox."""

    verb: str = "SELECT"
    mailbox: str = "INBOX"
    #: RFC 7162 3.1.8: SELECT/EXAMINE mailbox (CONDSTORE)
    condstore: bool = False
    #: RFC 7162 3.2.5: SELECT/EXAMINE mailbox (QRESYNC (...))
    qresync: Qresync | None = None
    #: RFC 6154 5.2: CREATE mailbox (USE (\\Archive ...)), the special uses asked for
    use: tuple[str, ...] = ()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.verb

    def args_wire(self) -> bytes:
        params = ([b"CONDSTORE"] if self.condstore else []) + ([self.qresync.wire()] if self.qresync else [])
        if self.use:
            params.append(b"USE (" + " ".join(self.use).encode() + b")")
        return astring(encode_mailbox(self.mailbox)) + (b" (" + b" ".join(params) + b")" if params else b"")


@dataclass(frozen=True)
class Rename(Command):
    old: str = ""
    new: str = ""
    name = "RENAME"

    def args_wire(self) -> bytes:
        return astring(encode_mailbox(self.old)) + b" " + astring(encode_mailbox(self.new))


@dataclass(frozen=True)
class ListCmd(Command):
    """LIST / LSUB, with RFC 5258 selection and return options."""

    reference: str = ""
    patterns: tuple[str, ...] = ("*",)
    lsub: bool = False
    select_opts: tuple[str, ...] = ()
    return_opts: tuple[str, ...] = ()
    #: RFC 5819 LIST-STATUS items
    status_items: tuple[str, ...] = ()

    @property
    def name(self) -> str:  # type: ignore[override]
        return "LSUB" if self.lsub else "LIST"

    def args_wire(self) -> bytes:
        out = b""
        if self.select_opts:
            out += b"(" + " ".join(self.select_opts).encode() + b") "
        out += astring(encode_mailbox(self.reference)) + b" "
        pats = [astring(encode_mailbox(p)) for p in self.patterns]
        out += pats[0] if len(pats) == 1 and not self.select_opts else b"(" + b" ".join(pats) + b")"
        if self.return_opts or self.status_items:
            opts = [o.encode() for o in self.return_opts if o != "STATUS"]
            if self.status_items:
                opts.append(b"STATUS (" + " ".join(self.status_items).encode() + b")")
            out += b" RETURN (" + b" ".join(opts) + b")"
        return out


@dataclass(frozen=True)
class Status(Command):
    mailbox: str = "INBOX"
    items: tuple[str, ...] = ("MESSAGES",)
    name = "STATUS"

    def args_wire(self) -> bytes:
        return astring(encode_mailbox(self.mailbox)) + b" (" + " ".join(self.items).encode() + b")"


@dataclass(frozen=True)
class CatPart:
    """One part of an RFC 4469 CATENATE: a literal's bytes (``text``; ``binary`` for a literal8)
    or an IMAP URL (RFC 5092) of a message or part the server already holds."""

    text: bytes | None = None
    url: str | None = None
    binary: bool = False

    def to_wire(self) -> bytes:
        if self.url is not None:
            return b"URL " + astring(self.url)
        assert self.text is not None
        return (b"TEXT ~{%d+}\r\n" if self.binary else b"TEXT {%d+}\r\n") % len(self.text) + self.text


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: flags, INTERNALDATE and its bytes (``binary``: sent as an
    RFC 3516 literal8, ``~{n}``, which may carry NUL; ``utf8``: as RFC 6855's ``UTF8 (~{n})``),
    or the parts the server is to join into it (RFC 4469 ``CATENATE (...)``)."""

    flags: tuple[str, ...] = ()
    date: dt.datetime | None = None
    message: bytes = b""
    binary: bool = False
    utf8: bool = False
    catenate: tuple[CatPart, ...] | None = None

    def to_wire(self) -> bytes:
        out = b""
        if self.flags:
            out += b" (" + " ".join(self.flags).encode() + b")"
        if self.date is not None:
            out += b' "' + format_internaldate(self.date).encode() + b'"'
        if self.catenate is not None:
            return out + b" CATENATE (" + b" ".join(p.to_wire() for p in self.catenate) + b")"
        literal = (b"~{%d+}\r\n" if self.binary else b"{%d+}\r\n") % len(self.message) + self.message
        return out + (b" UTF8 (" + literal + b")" if self.utf8 else b" " + literal)


@dataclass(frozen=True)
class Append(Command):
    """APPEND with one message, or several (RFC 3502 MULTIAPPEND)."""

    mailbox: str = "INBOX"
    messages: tuple[AppendMessage, ...] = (AppendMessage(),)
    name = "APPEND"

    def args_wire(self) -> bytes:
        return astring(encode_mailbox(self.mailbox)) + b"".join(m.to_wire() for m in self.messages)


@dataclass(frozen=True)
class FetchAtt:
    """One FETCH data item. ``section`` is set for BODY[...] / BODY.PEEK[...]; RFC 3516's
    BINARY[part] / BINARY.PEEK[part] are named "BINARY" (``peek``, ``partial``), BINARY.SIZE[part]
    "BINARY.SIZE", each with ``part``."""

    name: str  # FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, RFC822,
    # RFC822.HEADER, RFC822.TEXT, MODSEQ, SAVEDATE, EMAILID, THREADID, PREVIEW, BODY[] (name
    # "BODY[]" when a section is given)
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    peek: bool = False
    section: bool = False
    #: RFC 8970 PREVIEW (LAZY): NIL rather than work for a preview not cached
    lazy: bool = False

    def section_spec(self) -> str:
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
            if self.fields:
                spec += " (" + " ".join(self.fields) + ")"
        return spec

    def request_text(self) -> str:
        if self.name == "BINARY":
            return ("BINARY.PEEK[" if self.peek else "BINARY[") + self._binary_tail(True)
        if self.name == "BINARY.SIZE":
            return "BINARY.SIZE[" + self._binary_tail(False)
        if not self.section:
            return self.name + (" (LAZY)" if self.lazy else "")
        out = ("BODY.PEEK[" if self.peek else "BODY[") + self.section_spec() + "]"
        if self.partial:
            out += f"<{self.partial[0]}.{self.partial[1]}>"
        return out

    def _binary_tail(self, with_partial: bool) -> str:
        out = ".".join(str(p) for p in self.part) + "]"
        if with_partial and self.partial:
            out += f"<{self.partial[0]}.{self.partial[1]}>"
        return out

    def response_name(self) -> str:
        """What the server echoes: no PEEK, partial shows the origin only."""
        if self.name in ("BINARY", "BINARY.SIZE"):
            out = f"{self.name}[" + ".".join(str(p) for p in self.part) + "]"
            return out + (f"<{self.partial[0]}>" if self.partial else "")
        if not self.section:
            return self.name
        out = "BODY[" + self.section_spec() + "]"
        if self.partial:
            out += f"<{self.partial[0]}>"
        return out


@dataclass(frozen=True)
class Fetch(Command):
    seqset: SeqSet = field(default_factory=lambda: SeqSet.parse("1"))
    atts: tuple[FetchAtt, ...] = ()
    uid: bool = False
    #: RFC 7162 3.1.4: (CHANGEDSINCE n), only messages whose MODSEQ is above n
    changedsince: int | None = None
    #: RFC 7162 3.2.6: UID FETCH ... (CHANGEDSINCE n VANISHED), expunged UIDs too
    vanished: bool = False
    #: RFC 9394 3.2: (PARTIAL low:high), a window of the addressed messages (negative: from the last)
    partial: tuple[int, int] | None = None
    name = "FETCH"

    def to_wire(self) -> bytes:
        atts = " ".join(a.request_text() for a in self.atts)
        prefix = "UID FETCH" if self.uid else "FETCH"
        words = []
        if self.changedsince is not None:
            words.append(f"CHANGEDSINCE {self.changedsince}{' VANISHED' if self.vanished else ''}")
        if self.partial is not None:
            words.append(f"PARTIAL {self.partial[0]}:{self.partial[1]}")
        mods = f" ({' '.join(words)})" if words else ""
        return f"{self.tag} {prefix} {self.seqset} ({atts}){mods}\r\n".encode()


@dataclass(frozen=True)
class Store(Command):
    seqset: SeqSet = field(default_factory=lambda: SeqSet.parse("1"))
    mode: str = "+"  # "+", "-" or "" (replace)
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    #: RFC 7162 3.1.3: (UNCHANGEDSINCE n), messages whose MODSEQ is above n are left alone
    unchangedsince: int | None = None
    name = "STORE"

    def to_wire(self) -> bytes:
        item = f"{self.mode}FLAGS" + (".SILENT" if self.silent else "")
        prefix = "UID STORE" if self.uid else "STORE"
        mods = f" (UNCHANGEDSINCE {self.unchangedsince})" if self.unchangedsince is not None else ""
        return f"{self.tag} {prefix} {self.seqset}{mods} {item} ({' '.join(self.flags)})\r\n".encode()


@dataclass(frozen=True)
class Copy(Command):
    seqset: SeqSet = field(default_factory=lambda: SeqSet.parse("1"))
    mailbox: str = "INBOX"
    uid: bool = False
    move: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return "MOVE" if self.move else "COPY"

    def to_wire(self) -> bytes:
        prefix = ("UID " if self.uid else "") + self.name
        return f"{self.tag} {prefix} {self.seqset} ".encode() + astring(encode_mailbox(self.mailbox)) + b"\r\n"


@dataclass(frozen=True)
class CancelUpdate(Command):
    """RFC 5267 4.3.5 CANCELUPDATE: the tags of the searches no longer to update."""

    tags: tuple[str, ...] = ()
    name = "CANCELUPDATE"


@dataclass(frozen=True)
class Search(Command):
    charset: str | None = None
    criteria: tuple[SearchKey, ...] = (("ALL",),)
    uid: bool = False
    #: RFC 4731 ESEARCH return options, MIN MAX COUNT ALL (None: a plain SEARCH answer; (): ALL)
    return_opts: tuple[str, ...] | None = None
    name = "SEARCH"

    def to_wire(self) -> bytes:
        prefix = ("UID " if self.uid else "") + "SEARCH"
        out = f"{self.tag} {prefix}".encode()
        if self.return_opts is not None:
            out += b" RETURN (" + " ".join(self.return_opts).encode() + b")"
        if self.charset:
            out += b" CHARSET " + self.charset.encode()
        for key in self.criteria:
            out += b" " + search_key_wire(key)
        return out + b"\r\n"


def search_key_wire(key: SearchKey) -> bytes:
    name = key[0]
    if name == "AND":
        return b"(" + b" ".join(search_key_wire(k) for k in key[1]) + b")"
    if name == "NOT":
        return b"NOT " + search_key_wire(key[1])
    if name == "OR":
        return b"OR " + search_key_wire(key[1]) + b" " + search_key_wire(key[2])
    if name == "SEQ":
        return str(key[1]).encode()
    out = name.encode()
    for arg in key[1:]:
        if isinstance(arg, SeqSet):
            out += b" " + str(arg).encode()
        elif isinstance(arg, int):
            out += b" " + str(arg).encode()
        elif isinstance(arg, dt.date):
            out += f" {arg.day}-{('Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec'.split())[arg.month - 1]}-{arg.year}".encode()
        elif name in ("KEYWORD", "UNKEYWORD"):
            out += b" " + arg.encode()
        else:
            out += b" " + astring(arg)
    return out


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or RFC 4315 UID EXPUNGE with a set."""

    seqset: SeqSet | None = None
    name = "EXPUNGE"

    def to_wire(self) -> bytes:
        if self.seqset is None:
            return f"{self.tag} EXPUNGE\r\n".encode()
        return f"{self.tag} UID EXPUNGE {self.seqset}\r\n".encode()


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971: the client's field/value pairs, or None for NIL."""

    params: tuple[tuple[str, str | None], ...] | None = None
    name = "ID"

    def args_wire(self) -> bytes:
        if self.params is None:
            return b"NIL"
        return b"(" + b" ".join(astring(k) + b" " + astring(v) for k, v in self.params) + b")"


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...] = ()
    name = "ENABLE"

    def args_wire(self) -> bytes:
        return " ".join(self.capabilities).encode()


@dataclass(frozen=True)
class Compress(Command):
    """RFC 4978: COMPRESS mechanism (only DEFLATE is offered)."""

    mechanism: str = "DEFLATE"
    name = "COMPRESS"

    def args_wire(self) -> bytes:
        return self.mechanism.encode()


@dataclass(frozen=True)
class GetQuota(Command):
    root: str = ""
    name = "GETQUOTA"

    def args_wire(self) -> bytes:
        return astring(self.root)


@dataclass(frozen=True)
class SetQuota(Command):
    root: str = ""
    name = "SETQUOTA"


@dataclass(frozen=True)
class GetMetadata(Command):
    """RFC 5464 4.2: GETMETADATA [(MAXSIZE n DEPTH d)] mailbox entries; mailbox "" is the
    server; ``depth`` 0, 1 or -1 (infinity)."""

    mailbox: str = ""
    entries: tuple[str, ...] = ()
    depth: int = 0
    maxsize: int | None = None
    name = "GETMETADATA"

    def args_wire(self) -> bytes:
        opts = ([b"MAXSIZE %d" % self.maxsize] if self.maxsize is not None else []) + \
            ([b"DEPTH " + (b"infinity" if self.depth < 0 else b"%d" % self.depth)] if self.depth else [])
        return (b"(" + b" ".join(opts) + b") " if opts else b"") + astring(encode_mailbox(self.mailbox)) + \
            b" (" + b" ".join(astring(e) for e in self.entries) + b")"


@dataclass(frozen=True)
class SetMetadata(Command):
    """RFC 5464 4.3: SETMETADATA mailbox (entry value ...); a None value (NIL) removes the entry."""

    mailbox: str = ""
    items: tuple[tuple[str, bytes | None], ...] = ()
    name = "SETMETADATA"

    def args_wire(self) -> bytes:
        return astring(encode_mailbox(self.mailbox)) + b" (" + \
            b" ".join(astring(e) + b" " + astring(v) for e, v in self.items) + b")"


@dataclass(frozen=True)
class Invalid:
    """A command that could not be parsed: answered with BAD (the tag when one was readable)."""

    tag: str
    reason: str


Parsed = Union[Command, Invalid]

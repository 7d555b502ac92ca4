"""From bytes to typed commands. Two layers:

* ``tokens.tokenize(buf)``: one complete command (its lines and inline ``{n}\\r\\n`` literals,
  as the framer in ``framing.py`` assembled it) to atoms, strings and parenthesised lists;
* ``parse(buf)``: tokens to the registered command (``registry``) and the Command its parser
  made, or an ``Invalid`` value (answered with BAD); SEARCH keys are read by ``search_syntax.py``.

Nothing here raises on bad input: every failure becomes ``Invalid``.
"""
from __future__ import annotations

import base64
import binascii
import re

from ..config import IMAPConfig
from ..store.models.mail import ANNOTATION_NAME_COLUMN
from .codec import STAR, SeqSet, parse_date_time
from .commands import (Append, AppendMessage, Authenticate, CancelUpdate, CatPart, Command, Compress, Copy, Enable, Expunge, Fetch, FetchAtt, GetMetadata, GetQuota, Id,
                       Invalid, ListCmd, Login, MailboxCommand, Parsed, Qresync, Rename, SetMetadata, SetQuota, Simple, Status, Store)
from .registry import COMMANDS, Spec, load
from .search_syntax import BadCharset, parse_search, partial_range
from .tokens import (UTF8_SESSION, Atom, ParseError, Str, TooComplex, need_args, read_astring, read_atom, read_flags,
                     read_mailbox, read_modifiers, read_modseq, read_nstring, read_pattern, read_seqset, tokenize)

__all__ = ["parse", "parse_command", "parse_fetch_att", "decode_sasl", "ParseError", "tokenize"]


# -- FETCH items ------------------------------------------------------------------------------------

_SECTION = re.compile(r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?\Z", re.IGNORECASE)
_SIMPLE_ATTS = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822",
                "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "SAVEDATE", "EMAILID", "THREADID", "PREVIEW"}
_MACROS = {"ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
           "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
           "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")}


#: RFC 3516: BINARY[part]<partial>, BINARY.PEEK[part]<partial>, BINARY.SIZE[part]
_BINARY = re.compile(r"^(BINARY|BINARY\.PEEK|BINARY\.SIZE)\[((?:[1-9][0-9]*)(?:\.[1-9][0-9]*)*)?\]"
                     r"(?:<(\d+)\.(\d+)>)?\Z", re.IGNORECASE)


def _binary_att(m: re.Match) -> FetchAtt:
    word = m.group(1).upper()
    part = tuple(int(p) for p in m.group(2).split(".")) if m.group(2) else ()
    partial = None
    if m.group(3) is not None:
        if word == "BINARY.SIZE":
            raise ParseError("BINARY.SIZE takes no partial")
        partial = (int(m.group(3)), int(m.group(4)))
    if word == "BINARY.SIZE":
        return FetchAtt("BINARY.SIZE", part)
    return FetchAtt("BINARY", part, partial=partial, peek=word == "BINARY.PEEK")


def parse_fetch_att(text: str) -> FetchAtt:
    upper = text.upper()
    if upper in _SIMPLE_ATTS:
        return FetchAtt(upper)
    binary = _BINARY.match(text)
    if binary:
        return _binary_att(binary)
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


def fetch_atts(tok) -> tuple[FetchAtt, ...]:
    if isinstance(tok, Atom) and tok.text.upper() in _MACROS:
        return tuple(FetchAtt(n) for n in _MACROS[tok.text.upper()])
    items = tok if isinstance(tok, list) else [tok]
    if not items:
        raise ParseError("empty fetch list")
    atts: list[FetchAtt] = []
    for t in items:
        if isinstance(t, list):  # RFC 8970: PREVIEW (LAZY), the only item with modifiers
            if not atts or atts[-1] != FetchAtt("PREVIEW") or [read_atom(m).upper() for m in t] != ["LAZY"]:
                raise ParseError("bad fetch modifiers")
            atts[-1] = FetchAtt("PREVIEW", lazy=True)
        else:
            atts.append(parse_fetch_att(read_atom(t)))
    return tuple(atts)


# -- commands -------------------------------------------------------------------------------------
# One parser per command: ``parse(tag, name, args, limits)``, registered with its handler
# (registry.command). ``name`` is the registered name ("UID FETCH"); ``args`` the tokens after it.

_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "MAILBOXID",
                 "DELETED"}
#: RFC 5258 and RFC 6154 LIST options (STATUS, RFC 5819, is read apart)
_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_TAG = re.compile(r"^[\x21-\x7e]+\Z")
_TAG_START = re.compile(rb"^([A-Za-z0-9.\-_!#$&',/:;<=>?@^`|~]+) ")


_DEFAULTS = IMAPConfig()


def parse_command(buf: bytes, limits: IMAPConfig = _DEFAULTS) -> Parsed:
    """One complete command (as framed) to a Command or Invalid; ``limits``: how deep lists and
    search keys may nest, and how many search keys one command may have."""
    return parse(buf, limits)[1]


#: commands that clients repeat word for word but for the tag (a client's every sync), whose
#: parsed form (immutable) is kept by their text after the tag: ``parse`` then only retags it
_REPEATED = frozenset({"LIST", "LSUB", "STATUS", "SELECT", "EXAMINE", "FETCH", "UID FETCH", "NOOP", "CHECK", "IDLE",
                       "EXPUNGE", "CLOSE", "UNSELECT", "CAPABILITY", "NAMESPACE", "SEARCH", "UID SEARCH"})
#: [UID] FETCH and STORE with a set of plain numbers, which clients repeat but for the tag and
#: the set (a message's body, a message's flags): kept by the text around the set, whose parse
#: does not depend on the set (``fetch``, ``store``); a hit parses only the set
_WITH_SET = re.compile(rb"((?:UID )?(?:FETCH|STORE)) ([0-9:,*]+) ", re.IGNORECASE)
_SET_COMMANDS = frozenset({"FETCH", "UID FETCH", "STORE", "UID STORE"})
#: commands longer than this are not kept (nor any with a literal)
_KEPT_LENGTH = 200
#: (text after the tag, UTF8=ACCEPT, the parsers' limits) -> (spec, command); emptied when this full
_KEPT_COUNT = 512
_kept: dict[tuple, tuple[Spec, Command]] = {}


def parse(buf: bytes, limits: IMAPConfig = _DEFAULTS, utf8: bool = False) -> tuple[Spec | None, Parsed]:
    """The registered command and what its parser made of ``buf`` (None and Invalid for an
    unknown command); ``utf8``: the session has enabled UTF8=ACCEPT (RFC 6855), so mailbox
    names are UTF-8, not modified UTF-7. A command of ``_REPEATED`` seen before with another
    tag, or one of ``_SET_COMMANDS`` with another tag and set, is not parsed again."""
    m = _TAG_START.match(buf) if len(buf) <= _KEPT_LENGTH else None
    key = numbers = None
    if m is not None and b"{" not in buf:
        rest = buf[m.end():]
        with_set = _WITH_SET.match(rest)
        if with_set is not None:  # the set left out of the key
            numbers = with_set.group(2)
            rest = (with_set.group(1), rest[with_set.end():])
        key = (rest, utf8, limits.max_search_depth, limits.max_search_keys, limits.max_catenate_parts)
        hit = _kept.get(key)
        if hit is not None:
            if numbers is None:
                return hit[0], _retagged(hit[1], m.group(1).decode("ascii"))
            try:
                seqset = SeqSet.parse(numbers.decode("ascii"))
            except ValueError:  # (a number out of range) parsed in full below, for its Invalid
                pass
            else:
                return hit[0], _retagged(hit[1], m.group(1).decode("ascii"), seqset)
    token = UTF8_SESSION.set(utf8)
    try:
        spec, cmd = _parse(buf, limits)
    finally:
        UTF8_SESSION.reset(token)
    if key is not None and spec is not None and not isinstance(cmd, Invalid):
        if numbers is None:
            keep = spec.name in _REPEATED
        else:  # the set the command holds is the one left out of the key
            keep = spec.name in _SET_COMMANDS and cmd.seqset.text == numbers.decode("ascii")
        if keep:
            if len(_kept) >= _KEPT_COUNT:
                _kept.clear()
            _kept[key] = (spec, cmd)
    return spec, cmd


def _retagged(cmd: Command, tag: str, seqset: SeqSet | None = None) -> Command:
    """A copy of a kept (frozen) command with another tag (and set)."""
    new = object.__new__(type(cmd))
    new.__dict__.update(cmd.__dict__)
    new.__dict__["tag"] = tag
    if seqset is not None:
        new.__dict__["seqset"] = seqset
    return new


def _parse(buf: bytes, limits: IMAPConfig) -> tuple[Spec | None, Parsed]:
    m = _TAG_START.match(buf)
    tag = m.group(1).decode("ascii") if m else "*"
    spec = None
    try:
        toks = tokenize(buf, limits.max_search_depth)
        if not toks or not isinstance(toks[0], Atom):
            raise ParseError("missing tag")
        tag = toks[0].text
        if not _TAG.match(tag) or any(c in tag for c in '+(){%*"\\'):
            tag = "*"
            raise ParseError("bad tag")
        if len(toks) < 2 or not isinstance(toks[1], Atom):
            raise ParseError("missing command")
        name, args = toks[1].text.upper(), toks[2:]
        if name == "UID":
            if not args or not isinstance(args[0], Atom):
                raise ParseError("UID needs a command")
            name, args = "UID " + args[0].text.upper(), args[1:]
        spec = COMMANDS.get(name) or load().get(name)
        if spec is None:
            raise ParseError("unknown command")
        return spec, spec.parse(tag, name, args, limits)
    except BadCharset:
        return spec, Invalid(tag, "BADCHARSET")
    except TooComplex as exc:
        return spec, Invalid(tag, str(exc))
    except (ParseError, ValueError, IndexError) as exc:
        return spec, Invalid(tag, str(exc)[:80] or "syntax error")


def no_args(tag: str, name: str, args: list, limits: IMAPConfig) -> Simple:
    """CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE, UNSELECT, IDLE, NAMESPACE."""
    need_args(args, 0)
    return Simple(tag, name)


def cancel_update(tag: str, name: str, args: list, limits: IMAPConfig) -> CancelUpdate:
    """RFC 5267 4.3.5 CANCELUPDATE with one or more quoted tags."""
    if not args or not all(isinstance(a, Str) for a in args):
        raise ParseError("CANCELUPDATE needs quoted tags")
    return CancelUpdate(tag, tuple(read_astring(a) for a in args))


def expunge(tag: str, name: str, args: list, limits: IMAPConfig) -> Expunge:
    """EXPUNGE, or RFC 4315 UID EXPUNGE with a UID set."""
    if name == "EXPUNGE":
        need_args(args, 0)
        return Expunge(tag)
    need_args(args, 1)
    return Expunge(tag, read_seqset(args[0]))


def login(tag: str, name: str, args: list, limits: IMAPConfig) -> Login:
    need_args(args, 2)
    return Login(tag, read_astring(args[0]), read_astring(args[1]))


def authenticate(tag: str, name: str, args: list, limits: IMAPConfig) -> Authenticate:
    if len(args) not in (1, 2):
        raise ParseError("AUTHENTICATE mechanism [initial-response]")
    initial = read_atom(args[1]) if len(args) == 2 else None
    return Authenticate(tag, read_atom(args[0]).upper(), initial)


def select(tag: str, name: str, args: list, limits: IMAPConfig) -> MailboxCommand:
    """SELECT / EXAMINE mailbox [(select parameters)]."""
    if len(args) == 2:
        return _parse_select_params(tag, name, read_mailbox(args[0]), args[1])
    return one_mailbox(tag, name, args, limits)


def one_mailbox(tag: str, name: str, args: list, limits: IMAPConfig) -> MailboxCommand:
    """CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT (and SELECT without parameters)."""
    need_args(args, 1)
    return MailboxCommand(tag, name, read_mailbox(args[0]))


def create(tag: str, name: str, args: list, limits: IMAPConfig) -> MailboxCommand:
    """CREATE mailbox [(USE (special-use ...))] (RFC 6154 5.2; RFC 4466 create parameters)."""
    if len(args) != 2:
        return one_mailbox(tag, name, args, limits)
    params = args[1]
    if not isinstance(params, list) or len(params) != 2 or not isinstance(params[0], Atom) \
            or params[0].text.upper() != "USE" or not isinstance(params[1], list):
        raise ParseError("CREATE parameters are (USE (attributes))")
    return MailboxCommand(tag, name, read_mailbox(args[0]), use=tuple(read_atom(t) for t in params[1]))


def rename(tag: str, name: str, args: list, limits: IMAPConfig) -> Rename:
    need_args(args, 2)
    return Rename(tag, read_mailbox(args[0]), read_mailbox(args[1]))


def status(tag: str, name: str, args: list, limits: IMAPConfig) -> Status:
    need_args(args, 2)
    if not isinstance(args[1], list) or not args[1]:
        raise ParseError("STATUS needs a list of items")
    items = tuple(read_atom(t).upper() for t in args[1])
    if any(i not in _STATUS_ITEMS for i in items):
        raise ParseError("unknown STATUS item")
    return Status(tag, read_mailbox(args[0]), items)


def fetch(tag: str, name: str, args: list, limits: IMAPConfig) -> Fetch:
    """[UID] FETCH set items [(CHANGEDSINCE n [VANISHED] [PARTIAL range])]."""
    uid = name.startswith("UID ")
    changedsince, vanished, partial = None, False, None
    if len(args) == 3:
        changedsince, vanished, partial = _fetch_modifiers(args[2], uid)
        args = args[:2]
    need_args(args, 2)
    return Fetch(tag, read_seqset(args[0]), fetch_atts(args[1]), uid, changedsince, vanished, partial)


def store(tag: str, name: str, args: list, limits: IMAPConfig) -> Store:
    """[UID] STORE set [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags."""
    unchangedsince = None
    if len(args) >= 2 and isinstance(args[1], list):
        unchangedsince = read_modifiers(args[1], {"UNCHANGEDSINCE": True})["UNCHANGEDSINCE"]
        args = args[:1] + args[2:]
    if len(args) < 3:
        raise ParseError("STORE set item flags")
    item = read_atom(args[1]).upper()
    m = re.match(r"^([+-]?)FLAGS(\.SILENT)?$", item)
    if not m:
        raise ParseError("bad STORE item")
    flags = read_flags(args[2]) if len(args) == 3 else read_flags(args[2:])
    if "\\Recent" in flags:
        raise ParseError("\\Recent cannot be stored")
    return Store(tag, read_seqset(args[0]), m.group(1), bool(m.group(2)), flags, name.startswith("UID "),
                 unchangedsince)


def copy(tag: str, name: str, args: list, limits: IMAPConfig) -> Copy:
    """[UID] COPY / MOVE set mailbox."""
    need_args(args, 2)
    return Copy(tag, read_seqset(args[0]), read_mailbox(args[1]), name.startswith("UID "), name.endswith("MOVE"))


def search(tag: str, name: str, args: list, limits: IMAPConfig) -> Command:
    return parse_search(tag, args, name.startswith("UID "), limits)


def id_(tag: str, name: str, args: list, limits: IMAPConfig) -> Id:
    """RFC 2971: ID NIL or ID (field value ...)."""
    need_args(args, 1)
    if isinstance(args[0], Atom) and args[0].text.upper() == "NIL":
        return Id(tag, None)
    if not isinstance(args[0], list) or len(args[0]) % 2:
        raise ParseError("ID needs NIL or field/value pairs")
    pairs = args[0]
    return Id(tag, tuple((read_astring(pairs[i]), read_nstring(pairs[i + 1])) for i in range(0, len(pairs), 2)))


def enable(tag: str, name: str, args: list, limits: IMAPConfig) -> Enable:
    if not args:
        raise ParseError("ENABLE needs capabilities")
    return Enable(tag, tuple(read_atom(t).upper() for t in args))


def compress(tag: str, name: str, args: list, limits: IMAPConfig) -> Compress:
    need_args(args, 1)
    return Compress(tag, read_atom(args[0]).upper())


def getquota(tag: str, name: str, args: list, limits: IMAPConfig) -> GetQuota:
    need_args(args, 1)
    return GetQuota(tag, read_astring(args[0]))


def setquota(tag: str, name: str, args: list, limits: IMAPConfig) -> SetQuota:
    """SETQUOTA is refused whatever its arguments (quotas are the operator's)."""
    return SetQuota(tag)


#: RFC 5464 3.2: the two roots an entry name starts with
_METADATA_ROOTS = ("/private", "/shared")


def _entry(tok, root_ok: bool = False) -> str:
    """An RFC 5464 entry name, lower case (entry names are case-insensitive): "/private/..." or
    "/shared/..." ("/private" or "/shared" alone when ``root_ok``, as GETMETADATA may ask); no
    "*", "%", control characters, empty parts or final "/"; at most ANNOTATION_NAME_COLUMN."""
    name = read_astring(tok).lower()
    root = name.split("/", 2)[:2]
    if len(root) < 2 or root[0] or "/" + root[1] not in _METADATA_ROOTS or (name in _METADATA_ROOTS and not root_ok):
        raise ParseError("an entry name starts /private/ or /shared/")
    if any(c in name for c in "*%") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) \
            or "//" in name or name.endswith("/") or len(name) > ANNOTATION_NAME_COLUMN:
        raise ParseError("bad entry name")
    return name


def getmetadata(tag: str, name: str, args: list, limits: IMAPConfig) -> GetMetadata:
    """GETMETADATA [(options)] mailbox entries (RFC 5464 4.2; the options are also taken after
    the mailbox, where drafts of the RFC had them, as Dovecot does)."""
    opts: list = []
    if args and isinstance(args[0], list):
        opts, args = args[0], args[1:]
    elif len(args) == 3 and isinstance(args[1], list):
        opts, args = args[1], [args[0], args[2]]
    need_args(args, 2)
    depth, maxsize, seen = 0, None, set()
    if len(opts) % 2:
        raise ParseError("GETMETADATA options are (MAXSIZE n DEPTH 0|1|infinity)")
    for i in range(0, len(opts), 2):
        key, value = read_atom(opts[i]).upper(), read_atom(opts[i + 1])
        if key in seen:
            raise ParseError("repeated GETMETADATA option")
        seen.add(key)
        if key == "MAXSIZE" and value.isdigit() and value.isascii() and len(value) <= 10 and int(value) < 1 << 32:
            maxsize = int(value)
        elif key == "DEPTH" and value.lower() in ("0", "1", "infinity"):
            depth = -1 if value.lower() == "infinity" else int(value)
        else:
            raise ParseError("GETMETADATA options are (MAXSIZE n DEPTH 0|1|infinity)")
    entries = args[1] if isinstance(args[1], list) else [args[1]]
    if not entries:
        raise ParseError("GETMETADATA needs entries")
    return GetMetadata(tag, read_mailbox(args[0]), tuple(_entry(e, root_ok=True) for e in entries), depth, maxsize)


def setmetadata(tag: str, name: str, args: list, limits: IMAPConfig) -> SetMetadata:
    """SETMETADATA mailbox (entry value ...): a value is a string, a literal or literal8 (binary,
    RFC 5464 5), or NIL to remove the entry."""
    need_args(args, 2)
    pairs = args[1]
    if not isinstance(pairs, list) or not pairs or len(pairs) % 2:
        raise ParseError("SETMETADATA mailbox (entry value ...)")
    items = []
    for i in range(0, len(pairs), 2):
        value = pairs[i + 1]
        if isinstance(value, Atom) and value.text.upper() == "NIL":
            items.append((_entry(pairs[i]), None))
        elif isinstance(value, Str):
            items.append((_entry(pairs[i]), value.data))
        else:
            raise ParseError("a METADATA value is a string, a literal or NIL")
    return SetMetadata(tag, read_mailbox(args[0]), tuple(items))


def _fetch_modifiers(tok, uid: bool) -> tuple[int | None, bool, tuple[int, int] | None]:
    """(CHANGEDSINCE n [VANISHED] [PARTIAL range]) in any order; VANISHED (RFC 7162 3.2.6) takes
    no value and only comes with CHANGEDSINCE in a UID FETCH; PARTIAL (RFC 9394 3.2) takes a
    range of the addressed messages, ``n:m`` from the first or ``-n:-m`` from the last."""
    if not isinstance(tok, list) or not tok:
        raise ParseError("bad modifier list")
    items = list(tok)
    vanished = False
    partial = None
    rest = []
    i = 0
    while i < len(items):
        t = items[i]
        word = t.text.upper() if isinstance(t, Atom) else ""
        if word == "VANISHED":
            if vanished:
                raise ParseError("repeated VANISHED")
            vanished = True
        elif word == "PARTIAL":
            if partial is not None or i + 1 == len(items):
                raise ParseError("PARTIAL once, with a range")
            partial = partial_range(read_atom(items[i + 1]))
            i += 1
        else:
            rest.append(t)
        i += 1
    if vanished and not uid:
        raise ParseError("VANISHED only in UID FETCH")
    changedsince = read_modifiers(rest, {"CHANGEDSINCE": False}).get("CHANGEDSINCE") if rest else None
    if changedsince is None and (vanished or partial is None):
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return changedsince, vanished, partial


def _known_set(tok) -> SeqSet:
    seqset = read_seqset(tok)
    if any(STAR in r for r in seqset.ranges):
        raise ParseError("* is not allowed here")
    return seqset


def _parse_select_params(tag: str, name: str, mailbox: str, params) -> MailboxCommand:
    """RFC 4466 select parameters: CONDSTORE (RFC 7162 3.1.8) and QRESYNC (3.2.5), each once."""
    if not isinstance(params, list) or not params:
        raise ParseError("bad SELECT parameters")
    condstore = False
    qresync = None
    i = 0
    while i < len(params):
        word = read_atom(params[i]).upper()
        if word == "CONDSTORE" and not condstore:
            condstore = True
            i += 1
        elif word == "QRESYNC" and qresync is None and i + 1 < len(params) and isinstance(params[i + 1], list):
            qresync = _qresync_params(params[i + 1])
            i += 2
        else:
            raise ParseError("unknown or repeated SELECT parameter")
    return MailboxCommand(tag, name, mailbox, condstore, qresync)


def _qresync_params(toks: list) -> Qresync:
    """uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data]"""
    if len(toks) < 2 or len(toks) > 4:
        raise ParseError("QRESYNC (uidvalidity modseq [known-uids] [seq-match-data])")
    text = read_atom(toks[0])
    if not text.isdigit() or not text.isascii() or text.startswith("0") or len(text) > 10 or int(text) > 0xFFFFFFFF:
        raise ParseError("bad UIDVALIDITY")
    uidvalidity = int(text)
    modseq = read_modseq(toks[1])
    rest = toks[2:]
    known = None
    if rest and isinstance(rest[0], Atom):
        known = _known_set(rest[0])
        rest = rest[1:]
    seq_match = None
    if rest:
        pair = rest[0]
        if len(rest) != 1 or not isinstance(pair, list) or len(pair) != 2:
            raise ParseError("bad seq-match-data")
        seq_match = (_known_set(pair[0]), _known_set(pair[1]))
    return Qresync(uidvalidity, modseq, known, seq_match)


def list_(tag: str, name: str, args: list, limits: IMAPConfig) -> ListCmd:
    """LIST / LSUB, with RFC 5258 selection and return options and RFC 5819 STATUS."""
    lsub = name == "LSUB"
    select_opts: tuple[str, ...] = ()
    if args and isinstance(args[0], list) and not lsub:
        select_opts = tuple(read_atom(t).upper() for t in args[0])
        if not set(select_opts) <= _SELECT_OPTIONS:
            raise ParseError("unknown LIST selection option")
        # RFC 5258 3.1: RECURSIVEMATCH needs a base option (SUBSCRIBED; SPECIAL-USE and REMOTE
        # are independent ones, RFC 6154 6)
        if "RECURSIVEMATCH" in select_opts and "SUBSCRIBED" not in select_opts:
            raise ParseError("RECURSIVEMATCH without SUBSCRIBED")
        args = args[1:]
    return_opts: list[str] = []
    status_items: tuple[str, ...] = ()
    if len(args) >= 4 and isinstance(args[2], Atom) and args[2].text.upper() == "RETURN" and not lsub:
        if not isinstance(args[3], list):
            raise ParseError("RETURN needs a list")
        ret = args[3]
        j = 0
        while j < len(ret):
            opt = read_atom(ret[j]).upper()
            if opt == "STATUS":
                if j + 1 >= len(ret) or not isinstance(ret[j + 1], list):
                    raise ParseError("STATUS needs items")
                status_items = tuple(read_atom(t).upper() for t in ret[j + 1])
                if any(i not in _STATUS_ITEMS for i in status_items):
                    raise ParseError("unknown STATUS item")
                j += 2
            elif opt in _RETURN_OPTIONS:
                return_opts.append(opt)
                j += 1
            else:
                raise ParseError("unknown LIST return option")
        args = args[:2]
    need_args(args, 2)
    reference = read_pattern(args[0])
    pat_toks = args[1] if isinstance(args[1], list) else [args[1]]
    if not pat_toks:
        raise ParseError("empty pattern list")
    patterns = tuple(read_pattern(t) for t in pat_toks)
    return ListCmd(tag, reference, patterns, lsub, select_opts, tuple(return_opts), status_items)


def append(tag: str, name: str, args: list, limits: IMAPConfig) -> Append:
    """APPEND mailbox, then one or more (RFC 3502 MULTIAPPEND) of [flags] [date-time] and the
    message: a literal ``{n}`` or (RFC 3516) ``~{n}``, RFC 6855's ``UTF8 (~{n})``, or RFC 4469's
    ``CATENATE (TEXT literal / URL url ...)``."""
    if len(args) < 2:
        raise ParseError("APPEND mailbox [flags] [date] message")
    mailbox = read_mailbox(args[0])
    rest = args[1:]
    messages = []
    while rest:
        flags: tuple[str, ...] = ()
        date = None
        if isinstance(rest[0], list):
            flags = read_flags(rest[0])
            if "\\Recent" in flags:
                raise ParseError("\\Recent cannot be appended")
            rest = rest[1:]
        if len(rest) >= 2 and isinstance(rest[0], Str) and not rest[0].literal:
            try:
                date = parse_date_time(rest[0].text)
            except ValueError:
                raise ParseError("bad date-time") from None
            rest = rest[1:]
        word = rest[0].text.upper() if rest and isinstance(rest[0], Atom) else None
        if word in ("UTF8", "CATENATE"):
            if len(rest) < 2 or not isinstance(rest[1], list):
                raise ParseError(f"{word} needs a list")
            if word == "UTF8":
                body = rest[1]
                if len(body) != 1 or not isinstance(body[0], Str) or not body[0].binary:
                    raise ParseError("UTF8 takes one literal8")
                messages.append(AppendMessage(flags, date, body[0].data, True, utf8=True))
            else:
                messages.append(AppendMessage(flags, date, catenate=_cat_parts(rest[1], limits)))
            rest = rest[2:]
            continue
        if not rest or not isinstance(rest[0], Str) or not rest[0].literal:
            raise ParseError("APPEND message must be a literal")
        messages.append(AppendMessage(flags, date, rest[0].data, rest[0].binary))
        rest = rest[1:]
    return Append(tag, mailbox, tuple(messages))


def _cat_parts(toks: list, limits: IMAPConfig) -> tuple[CatPart, ...]:
    """RFC 4469 5: ``TEXT literal`` and ``URL astring`` pairs, at least one, at most
    imap.max_catenate_parts (TooComplex("TOOMANYPARTS") past it)."""
    if not toks or len(toks) % 2:
        raise ParseError("CATENATE needs TEXT or URL parts")
    if len(toks) // 2 > limits.max_catenate_parts:
        raise TooComplex("TOOMANYPARTS")
    parts = []
    for kind, value in zip(toks[::2], toks[1::2]):
        kind = read_atom(kind).upper()
        if kind == "TEXT" and isinstance(value, Str) and value.literal:
            parts.append(CatPart(text=value.data, binary=value.binary))
        elif kind == "URL":
            parts.append(CatPart(url=read_astring(value)))
        else:
            raise ParseError("CATENATE parts are TEXT literal or URL url")
    return tuple(parts)


def decode_sasl(text: str) -> bytes:
    """Base64 of a SASL response ("=" is the empty response, RFC 4959)."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("bad base64") from None

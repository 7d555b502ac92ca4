"""The SEARCH grammar (RFC 3501 6.4.4): keys to the tuples ``imap.search`` evaluates."""
from __future__ import annotations

import re

from ..config import IMAPConfig
from .codec import parse_date
from .commands import Search
from .tokens import UTF8_SESSION, Atom, ParseError, Str, TooComplex, read_astring, read_atom, read_modseq, read_seqset


# -- SEARCH ---------------------------------------------------------------------------------------

_NO_ARG = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
           "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "SAVEDATESUPPORTED"}
_STRING_ARG = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_ARG = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"}
_NUMBER_ARG = {"LARGER", "SMALLER"}
#: RFC 4731 return options, RFC 5182 SAVE, and RFC 5267's UPDATE, CONTEXT and PARTIAL (RFC 9394;
#: kept as "PARTIAL low:high", its range as the client wrote it, so the command writes back)
RETURN_OPTIONS = ("MIN", "MAX", "COUNT", "ALL", "PARTIAL", "UPDATE", "SAVE", "CONTEXT")
_ENTRY_TYPES = {"PRIV", "SHARED", "ALL"}


class _Keys:
    """Reads search keys, counting them and their nesting (parentheses, NOT, OR): past either
    limit it raises TooComplex, so the parser's recursion (and the evaluator's after it) is
    bounded whatever the client sends."""

    def __init__(self, decode, limits: IMAPConfig) -> None:
        self.decode = decode
        self.max_depth = limits.max_search_depth
        self.keys_left = limits.max_search_keys

    def keys(self, toks: list, depth: int, empty: str) -> tuple:
        """Every search key of ``toks`` (a command's arguments or a parenthesised group), in order."""
        keys = []
        i = 0
        while i < len(toks):
            k, i = self.key(toks, i, depth)
            keys.append(k)
        if not keys:
            raise ParseError(empty)
        return tuple(keys)

    def key(self, toks: list, i: int, depth: int) -> tuple[tuple, int]:
        if depth > self.max_depth:
            raise TooComplex("TOODEEP")
        self.keys_left -= 1
        if self.keys_left < 0:
            raise TooComplex("TOOMANYKEYS")
        if i >= len(toks):
            raise ParseError("search key missing")
        tok = toks[i]
        if isinstance(tok, list):
            return ("AND", self.keys(tok, depth + 1, "empty search group")), i + 1
        decode = self.decode
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
            return (word, read_atom(toks[i + 1])), i + 2
        if word in _DATE_ARG:
            if i + 1 >= len(toks):
                raise ParseError("date missing")
            try:
                return (word, parse_date(read_astring(toks[i + 1]))), i + 2
            except ValueError:
                raise ParseError("bad date") from None
        if word in _NUMBER_ARG:
            if i + 1 >= len(toks):
                raise ParseError("number missing")
            num = read_atom(toks[i + 1])
            if not num.isdigit() or len(num) > 19:
                raise ParseError("bad number")
            return (word, int(num)), i + 2
        if word == "HEADER":
            if i + 2 >= len(toks):
                raise ParseError("HEADER needs a field and a string")
            return (word, read_astring(toks[i + 1]).upper(), decode(toks[i + 2])), i + 3
        if word == "UID":
            if i + 1 >= len(toks):
                raise ParseError("UID set missing")
            return ("UID", read_seqset(toks[i + 1])), i + 2
        if word == "MODSEQ":
            # RFC 7162 3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer; a message has
            # one modseq for all its flags, so an entry name and type are checked and not used.
            j = i + 1
            if j < len(toks) and isinstance(toks[j], Str):
                if j + 1 >= len(toks) or read_atom(toks[j + 1]).upper() not in _ENTRY_TYPES:
                    raise ParseError("bad MODSEQ entry type")
                j += 2
            if j >= len(toks):
                raise ParseError("mod-sequence missing")
            return ("MODSEQ", read_modseq(toks[j], zero=True)), j + 1
        if word == "NOT":
            k, j = self.key(toks, i + 1, depth + 1)
            return ("NOT", k), j
        if word == "OR":
            a, j = self.key(toks, i + 1, depth + 1)
            b, j = self.key(toks, j, depth + 1)
            return ("OR", a, b), j
        if word[:1].isdigit() or word[:1] == "*" or word == "$":  # "$": RFC 5182
            return ("SEQ", read_seqset(tok)), i + 1
        raise ParseError(f"unknown search key {word[:20]}")


class BadCharset(ParseError):
    pass


#: the charsets search strings may be in (NO [BADCHARSET (UTF-8 US-ASCII)] for others)
CHARSETS = ("UTF-8", "US-ASCII")


def check_charset(name: str) -> str:
    """The charset named, upper-cased; BadCharset if it is not one of CHARSETS."""
    charset = name.upper()
    if charset not in CHARSETS:
        raise BadCharset(charset)
    return charset


def read_search_keys(args: list, limits: IMAPConfig, empty: str) -> tuple:
    """Search keys to the end of a command's arguments (SEARCH, and SORT and THREAD after their
    charset), bounded as ``_Keys`` says."""
    return _Keys(read_astring, limits).keys(args, 1, empty)


def read_return_options(args: list) -> tuple[tuple[str, ...] | None, list]:
    """RFC 4731 / RFC 5267 ``RETURN (option...)`` at the start of ``args`` (None if absent) and
    the arguments after it. PARTIAL takes a range (``partial_range``) and excludes ALL (RFC 5267
    4.4). CONTEXT (RFC 5267 4.2) is a hint that the search will be used again, which a server
    may ignore: it is checked and dropped (``RETURN (CONTEXT)`` is ``RETURN ()``, that is ALL)."""
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].text.upper() == "RETURN" and isinstance(args[1], list):
        return_opts: list[str] = []
        toks = iter(args[1])
        for t in toks:
            opt = read_atom(t).upper()
            if opt == "PARTIAL":
                low, high = partial_range(read_atom(next(toks, None)))
                opt = f"PARTIAL {low}:{high}"
            return_opts.append(opt)
        names = [o.split()[0] for o in return_opts]
        if any(o not in RETURN_OPTIONS for o in names) or len(set(names)) != len(names):
            raise ParseError("unknown or repeated RETURN option")
        if "PARTIAL" in names and "ALL" in names:
            raise ParseError("RETURN PARTIAL excludes ALL")
        return tuple(o for o in return_opts if o != "CONTEXT"), args[2:]
    return None, args


def partial_range(text: str) -> tuple[int, int]:
    """RFC 9394 partial-range: ``low:high`` counts results from the first (1 is the first),
    ``-low:-high`` from the last (-1 is the last); both ends non-zero and of one sign, in either
    order, as written."""
    m = re.fullmatch(r"(-?)([1-9][0-9]{0,9}):(-?)([1-9][0-9]{0,9})", text)
    if m is None or m[1] != m[3]:
        raise ParseError("PARTIAL needs a range n:m or -n:-m")
    sign = -1 if m[1] else 1
    return sign * int(m[2]), sign * int(m[4])


def partial_option(opts: tuple[str, ...]) -> tuple[str, int, int] | None:
    """The PARTIAL return option among ``opts``: (its range text, low, high), or None."""
    for o in opts:
        if o.startswith("PARTIAL "):
            text = o.split()[1]
            return (text, *partial_range(text))
    return None


def parse_search(tag: str, args: list, uid: bool, limits: IMAPConfig = IMAPConfig()) -> Search:
    charset = None
    return_opts, args = read_return_options(args)
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].text.upper() == "CHARSET":
        if UTF8_SESSION.get():
            # RFC 6855 3 (erratum 4029): a session that enabled UTF8=ACCEPT names no charset
            raise ParseError("CHARSET after ENABLE UTF8=ACCEPT")
        charset = check_charset(read_astring(args[1]))
        args = args[2:]
    return Search(tag, charset, read_search_keys(args, limits, "SEARCH needs a key"), uid, return_opts)

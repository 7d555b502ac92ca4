"""The SORT (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO, RFC 5267 ESORT RETURN) and THREAD
grammar: typed commands whose search part is read as SEARCH's (``search_syntax``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import IMAPConfig
from .commands import Command, SearchKey, search_key_wire
from .search_syntax import check_charset, read_return_options, read_search_keys
from .tokens import ParseError, read_astring, read_atom

#: RFC 5256 sort keys and RFC 5957's two
SORT_KEYS = frozenset(("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"))
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
#: the commands this grammar reads (the parser hands them here)
COMMANDS = frozenset(("SORT", "THREAD"))


@dataclass(frozen=True)
class Sort(Command):
    #: (key, reversed) in order of precedence
    criteria: tuple[tuple[str, bool], ...] = (("ARRIVAL", False),)
    charset: str = "UTF-8"
    search: tuple[SearchKey, ...] = (("ALL",),)
    uid: bool = False
    #: RFC 5267 ESORT return options (None: a plain SORT answer; (): ALL), SAVE (RFC 5182) among them
    return_opts: tuple[str, ...] | None = None
    name = "SORT"

    def to_wire(self) -> bytes:
        out = f"{self.tag} {'UID ' if self.uid else ''}SORT".encode()
        if self.return_opts is not None:
            out += b" RETURN (" + " ".join(self.return_opts).encode() + b")"
        keys = " ".join(("REVERSE " if rev else "") + key for key, rev in self.criteria)
        out += f" ({keys}) {self.charset}".encode()
        return out + b"".join(b" " + search_key_wire(k) for k in self.search) + b"\r\n"


@dataclass(frozen=True)
class Thread(Command):
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    search: tuple[SearchKey, ...] = (("ALL",),)
    uid: bool = False
    name = "THREAD"

    def to_wire(self) -> bytes:
        out = f"{self.tag} {'UID ' if self.uid else ''}THREAD {self.algorithm} {self.charset}".encode()
        return out + b"".join(b" " + search_key_wire(k) for k in self.search) + b"\r\n"


def _criteria(tok) -> tuple[tuple[str, bool], ...]:
    """sort-criteria = "(" sort-criterion *(SP sort-criterion) ")", each ["REVERSE" SP] sort-key."""
    if not isinstance(tok, list) or not tok:
        raise ParseError("SORT needs a list of sort keys")
    out = []
    reverse = False
    for t in tok:
        word = read_atom(t).upper()
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise ParseError("unknown sort key")
        out.append((word, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE needs a sort key")
    return tuple(out)


def parse_sort(tag: str, name: str, args: list, limits: IMAPConfig) -> Command:
    """[UID] SORT, as the command registry calls a parser."""
    return parse_sort_command(tag, "SORT", args, name.startswith("UID "), limits)


def parse_thread(tag: str, name: str, args: list, limits: IMAPConfig) -> Command:
    """[UID] THREAD, as the command registry calls a parser."""
    return parse_sort_command(tag, "THREAD", args, name.startswith("UID "), limits)


def parse_sort_command(tag: str, name: str, args: list, uid: bool, limits: IMAPConfig) -> Command:
    """SORT [RETURN (opts)] (criteria) charset search-key..., THREAD algorithm charset search-key...
    (the charset is required, unlike SEARCH's)."""
    if name == "SORT":
        return_opts, args = read_return_options(args)
        if len(args) < 3:
            raise ParseError("SORT (criteria) charset search-key")
        criteria = _criteria(args[0])
        charset = check_charset(read_astring(args[1]))
        return Sort(tag, criteria, charset, read_search_keys(args[2:], limits, "SORT needs a search key"), uid,
                    return_opts)
    if len(args) < 3:
        raise ParseError("THREAD algorithm charset search-key")
    algorithm = read_atom(args[0]).upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError("unknown threading algorithm")
    charset = check_charset(read_astring(args[1]))
    return Thread(tag, algorithm, charset, read_search_keys(args[2:], limits, "THREAD needs a search key"), uid)

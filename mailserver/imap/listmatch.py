"""LIST and LSUB patterns (RFC 3501 6.3.8): "*" matches anything, "%" anything but the hierarchy
separator. Matched in time linear in the name's length, whatever the pattern.

A regular expression made from a pattern (``^.*a.*a.*a.*a.*a.*b$``) backtracks: its time grows
with the name's length to the power of the number of wildcards, and one LIST held the event loop
for 15 s. Here all the patterns of a command run together as one bit-parallel automaton
(shift-and): bit ``i`` of the state says that the first ``i`` characters of a pattern match the
name read so far, and each character of the name costs a few integer operations on the state of
every pattern at once.
"""
from __future__ import annotations

from typing import Iterable

SEP = "/"
_WILDCARDS = "*%"


def _collapse(pattern: str) -> str:
    """Runs of wildcards as one: ``**``, ``*%`` and ``%*`` are ``*``, ``%%`` is ``%``."""
    out: list[str] = []
    for ch in pattern:
        if ch in _WILDCARDS and out and out[-1] in _WILDCARDS:
            out[-1] = "*" if "*" in (ch, out[-1]) else "%"
        else:
            out.append(ch)
    return "".join(out)


class ListPatterns:
    """The patterns of one LIST or LSUB command; ``matches(name)`` if any of them matches."""

    def __init__(self, reference: str, patterns: Iterable[str]) -> None:
        fulls = {_collapse(reference + p) for p in patterns}  # RFC 3501 6.3.8: the two joined
        self.everything = "*" in fulls
        #: patterns without wildcards: compared as they are (INBOX in any case)
        self._exact: set[str] = set()
        #: the automaton: per character, the state bits a literal moves to; the bits after a "*"
        #: and after a "%" (which loop on any character, resp. any but the separator); the bits
        #: where a pattern starts, and where one has matched the whole name
        self._literal: dict[str, int] = {}
        self._star = self._percent = self._start = self._accept = 0
        bit = 0
        for p in sorted(fulls):
            inbox = p[:5].upper() == "INBOX"
            if not any(ch in p for ch in _WILDCARDS):
                self._exact.add("INBOX" + p[5:] if inbox else p)
                continue
            self._start |= 1 << bit
            for i, ch in enumerate(p):
                after = 1 << (bit + i + 1)
                if ch == "*":
                    self._star |= after
                elif ch == "%":
                    self._percent |= after
                else:
                    for c in {ch.upper(), ch.lower()} if inbox and i < 5 else (ch,):
                        self._literal[c] = self._literal.get(c, 0) | after
            bit += len(p) + 1
            self._accept |= 1 << (bit - 1)
        self._wild = self._star | self._percent

    @property
    def costly(self) -> bool:
        """Whether matching runs the automaton (patterns with wildcards, other than "*")."""
        return not self.everything and bool(self._start)

    def matches(self, name: str) -> bool:
        if self.everything:
            return True
        if self._exact and ("INBOX" + name[5:] if name[:5].upper() == "INBOX" else name) in self._exact:
            return True
        if not self._start:
            return False
        literal, star, wild = self._literal, self._star, self._wild
        state = self._start
        state |= (state << 1) & wild  # a wildcard matches the empty string too
        for ch in name:
            state = ((state << 1) & literal.get(ch, 0)) | (state & (star if ch == SEP else wild))
            if not state:
                return False
            state |= (state << 1) & wild
        return bool(state & self._accept)


def parents(names: Iterable[str]) -> set[str]:
    """Every name that has a child among ``names`` (CHILDREN, RFC 3348), in one pass over them."""
    found: set[str] = set()
    for name in names:
        cut = name.rfind(SEP)
        while cut > 0:
            parent = name[:cut]
            if parent in found:
                break  # its own parents are in already
            found.add(parent)
            cut = name.rfind(SEP, 0, cut)
    return found

"""SEARCH (RFC 3501 6.4.4): every key, evaluated over Core rows of the selected folder.

Text keys use ``mailserver.mime.search_matches`` on the decoded, case-folded text cached at
delivery, so a Chinese word in an RFC 2047 subject or a base64 GB18030 body is found.
"""
from __future__ import annotations

import datetime as dt

from .. import mime
from ..mime.search import SearchHeader
from ..store.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN
from .codec import SeqSet

_FLAG_KEYS = {"ANSWERED": (ANSWERED, True), "DELETED": (DELETED, True), "DRAFT": (DRAFT, True),
              "FLAGGED": (FLAGGED, True), "SEEN": (SEEN, True), "UNANSWERED": (ANSWERED, False),
              "UNDELETED": (DELETED, False), "UNDRAFT": (DRAFT, False), "UNFLAGGED": (FLAGGED, False),
              "UNSEEN": (SEEN, False)}
_TEXT_KEYS = {"BCC": "bcc", "BODY": "body", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TEXT": "text",
              "TO": "to"}
#: RFC 8514 4.2: the save date's BEFORE, ON and SINCE
_SAVED_KEYS = {"SAVEDBEFORE": "BEFORE", "SAVEDON": "ON", "SAVEDSINCE": "SINCE"}


def columns_for(keys: tuple) -> set[str]:
    cols = {"flags", "keywords", "internaldate", "size"}
    for k in _walk(keys):
        if k[0] in _TEXT_KEYS:
            cols.add("search_text")
        if k[0] in ("HEADER", "SENTBEFORE", "SENTON", "SENTSINCE"):
            cols.add("header")  # the header alone, not the message
        if k[0] == "MODSEQ":
            cols.add("modseq")
        if k[0] in _SAVED_KEYS:
            cols.add("savedate")
    return cols


def uses_key(keys: tuple, name: str) -> bool:
    """A key called ``name`` anywhere in ``keys``, nested ones included."""
    return any(k[0] == name for k in _walk(keys))


def uses_modseq(keys: tuple) -> bool:
    """A MODSEQ key anywhere (RFC 7162 3.1.5: the answer then carries the highest MODSEQ)."""
    return uses_key(keys, "MODSEQ")


def _walk(keys):
    for k in keys:
        yield k
        if k[0] == "AND":
            yield from _walk(k[1])
        elif k[0] == "NOT":
            yield from _walk((k[1],))
        elif k[0] == "OR":
            yield from _walk((k[1], k[2]))


class Message:
    """One message row as the keys read it: its header is parsed on the first key that needs it
    and once only, however many keys (eight ORs of SENTBEFORE) read it."""

    __slots__ = ("row", "_header")

    def __init__(self, row) -> None:
        self.row = row
        self._header: SearchHeader | None = None

    @property
    def header(self) -> SearchHeader:
        if self._header is None:
            self._header = SearchHeader(self.row.header)
        return self._header


def _internal_date(row) -> dt.date:
    when = row.internaldate
    return when.date()


def _save_date(row) -> dt.date:
    """The day a message was saved into its folder; a message without one (none since
    migration 0011 gave every stored message its INTERNALDATE) counts its INTERNALDATE."""
    return (row.savedate or row.internaldate).date()


class Matcher:
    """Evaluates search keys for one message. ``seq`` and ``recent`` come from the session."""

    def __init__(self, largest_seq: int, largest_uid: int, is_recent, saved: frozenset[int] = frozenset()) -> None:
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        self.is_recent = is_recent
        #: RFC 5182: the UIDs "$" stands for
        self.saved = saved
        self._seq_cache: dict[int, list[tuple[int, int]]] = {}

    def _in_set(self, s: SeqSet, n: int, largest: int) -> bool:
        spans = self._seq_cache.get(id(s))
        if spans is None:
            spans = s.resolve(largest)
            self._seq_cache[id(s)] = spans
        return any(lo <= n <= hi for lo, hi in spans)

    def match(self, key: tuple, msg: Message, seq: int) -> bool:
        name = key[0]
        if name == "ALL":
            return True
        if name == "AND":
            return all(self.match(k, msg, seq) for k in key[1])
        if name == "NOT":
            return not self.match(key[1], msg, seq)
        if name == "OR":
            return self.match(key[1], msg, seq) or self.match(key[2], msg, seq)
        row = msg.row
        if name in _FLAG_KEYS:
            bit, want = _FLAG_KEYS[name]
            return bool(row.flags & bit) == want
        if name == "RECENT":
            return self.is_recent(row.uid)
        if name == "NEW":
            return self.is_recent(row.uid) and not row.flags & SEEN
        if name == "OLD":
            return not self.is_recent(row.uid)
        if name in ("KEYWORD", "UNKEYWORD"):
            have = key[1] in (row.keywords or "").split()
            return have if name == "KEYWORD" else not have
        if name in _TEXT_KEYS:
            return mime.search_matches(row.search_text, _TEXT_KEYS[name], key[1])
        if name == "HEADER":
            return msg.header.contains(key[1], key[2])
        if name == "LARGER":
            return row.size > key[1]
        if name == "SMALLER":
            return row.size < key[1]
        if name in ("BEFORE", "ON", "SINCE"):
            return _compare(name, _internal_date(row), key[1])
        if name in _SAVED_KEYS:
            return _compare(_SAVED_KEYS[name], _save_date(row), key[1])
        if name == "SAVEDATESUPPORTED":
            return True  # RFC 8514 4.3: every folder keeps save dates
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            sent = msg.header.sent_date
            return sent is not None and _compare(name[4:], sent, key[1])
        if name in ("UID", "SEQ") and key[1].saved:
            return row.uid in self.saved
        if name == "UID":
            return self._in_set(key[1], row.uid, self.largest_uid)
        if name == "SEQ":
            return self._in_set(key[1], seq, self.largest_seq)
        if name == "MODSEQ":
            return row.modseq >= key[1]
        return False


def _compare(how: str, day: dt.date, ref: dt.date) -> bool:
    if how == "BEFORE":
        return day < ref
    if how == "ON":
        return day == ref
    return day >= ref

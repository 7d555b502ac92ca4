"""The selected folder as one session sees it: UIDs by sequence number, \\Recent, and the
bookkeeping of updates owed to the client (RFC 3501 7.4.1, 5.2, 5.5)."""
from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Iterable

from ..store.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, Changes, Snapshot
from .codec import STAR, SeqSet

_FLAG_NAMES = ((SEEN, "\\Seen"), (ANSWERED, "\\Answered"), (FLAGGED, "\\Flagged"), (DELETED, "\\Deleted"),
               (DRAFT, "\\Draft"))
FLAG_BITS = {name.lower(): bit for bit, name in _FLAG_NAMES}
SYSTEM_FLAGS = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


def flag_text(flags: int, keywords: str | None, recent: bool = False) -> str:
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    if recent:
        names.append("\\Recent")
    if keywords:
        names.extend(keywords.split())
    return "(" + " ".join(names) + ")"


def split_flags(flags: tuple[str, ...]) -> tuple[int, list[str]]:
    """System flags to bits; the rest are keywords."""
    bits = 0
    keywords = []
    for f in flags:
        bit = FLAG_BITS.get(f.lower())
        if bit:
            bits |= bit
        elif not f.startswith("\\"):
            keywords.append(f)
    return bits, keywords


def keywords_refused(known: set[str], keywords: Iterable[str], max_count: int, max_length: int) -> bool:
    """Whether adding ``keywords`` to a folder (or message) that holds ``known`` passes
    imap.max_keywords (``max_count``, 0: no bound) or one of them imap.max_keyword_length."""
    wanted = set(keywords)
    if not wanted:
        return False
    if any(len(k) > max_length for k in wanted):
        return True
    new = wanted - known
    return bool(max_count and new) and len(known) + len(new) > max_count


@dataclass
class SelectedFolder:
    #: the folder's account, named by every statement on its messages (partitioned by it)
    account_id: int
    folder_id: int
    name: str
    readonly: bool
    uidvalidity: int
    modseq: int
    uids: array
    #: half-open (lo, hi] UID ranges this session holds as \\Recent
    recent_ranges: list[tuple[int, int]] = field(default_factory=list)
    keywords: set[str] = field(default_factory=set)
    #: expunges seen but not yet told (they may not be sent during FETCH, STORE, SEARCH)
    expunge_pending: bool = False
    #: IMAP4rev2 (RFC 9051): no \Recent; this session neither claims nor shows it
    rev2: bool = False
    #: RFC 5182 SEARCHRES: the UIDs of the last SEARCH RETURN (SAVE), what "$" names
    saved: set[int] = field(default_factory=set)
    #: imap.max_keywords: at that many keywords PERMANENTFLAGS drops "\\*" (no new ones); 0: no bound
    max_keywords: int = 0

    @classmethod
    def from_snapshot(cls, account_id: int, snap: Snapshot, readonly: bool, rev2: bool = False,
                      max_keywords: int = 0) -> "SelectedFolder":
        sel = cls(account_id, snap.folder.id, snap.folder.name, readonly, snap.folder.uidvalidity, snap.folder.highestmodseq,
                  snap.uids, keywords=set(snap.keywords), rev2=rev2, max_keywords=max_keywords)
        if snap.uids and snap.uids[-1] > snap.recent_above and not rev2:
            sel.recent_ranges.append((snap.recent_above, snap.uids[-1]))
        return sel

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def is_recent(self, uid: int) -> bool:
        return any(lo < uid <= hi for lo, hi in self.recent_ranges)

    def recent_count(self) -> int:
        total = 0
        for lo, hi in self.recent_ranges:
            total += bisect_right(self.uids, hi) - bisect_right(self.uids, lo)
        return total

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_ranges(self, seqset: SeqSet, by_uid: bool) -> list[tuple[int, int]]:
        """UID ranges addressed by a sequence set, limited to the messages this session knows
        ("$": the saved UIDs still here, whether the command takes UIDs or numbers)."""
        if not self.uids:
            return []
        if seqset.saved:
            out: list[tuple[int, int]] = []
            last = -2
            for i in sorted(i for i in (self.seq_of(u) for u in self.saved) if i is not None):
                if i == last + 1:
                    out[-1] = (out[-1][0], self.uids[i - 1])
                else:
                    out.append((self.uids[i - 1], self.uids[i - 1]))
                last = i
            return out
        if by_uid:
            out = []
            for lo, hi in seqset.resolve(self.max_uid):
                hi = min(hi, self.max_uid)
                if lo <= hi:
                    out.append((lo, hi))
            return out
        out = []
        for lo, hi in seqset.resolve(len(self.uids)):
            if lo > len(self.uids):
                raise IndexError("sequence number beyond the last message")
            hi = min(hi, len(self.uids))
            out.append((self.uids[lo - 1], self.uids[hi - 1]))
        return out

    def uids_in(self, ranges: list[tuple[int, int]]) -> list[int]:
        out: list[int] = []
        for lo, hi in ranges:
            out.extend(self.uids[bisect_left(self.uids, lo):bisect_right(self.uids, hi)])
        return out

    def apply(self, changes: Changes, allow_expunge: bool) -> tuple[list[int], list[int], list[int], list[tuple]]:
        """Fold a Changes into the view. Returns (expunged sequence numbers in the order to send
        EXPUNGE, the same messages' UIDs ascending (for QRESYNC's VANISHED), new UIDs, flag
        changes (uid, flags, keywords, modseq) of known messages)."""
        expunged_seqs: list[int] = []
        gone: list[int] = []
        if changes.present is not None:
            if allow_expunge:
                present = set(changes.present)
                kept = array("q")
                for i in range(len(self.uids) - 1, -1, -1):
                    if self.uids[i] not in present:
                        expunged_seqs.append(i + 1)
                        gone.append(self.uids[i])
                gone.reverse()
                kept.extend(u for u in self.uids if u in present)
                self.uids = kept
                self.expunge_pending = False
            else:
                self.expunge_pending = True
        new = [r[0] for r in changes.new if r[0] > self.max_uid]
        self.uids.extend(new)
        self.modseq = changes.highestmodseq
        return expunged_seqs, gone, new, changes.changed

    def unknown_keywords(self, keyword_texts: Iterable[str | None]) -> set[str]:
        """Keywords in these (space-separated) keyword columns that the client has not been
        told of in a FLAGS response."""
        out: set[str] = set()
        for text in keyword_texts:
            if text:
                out.update(k for k in text.split() if k not in self.keywords)
        return out

    def flags_responses(self) -> tuple[str, str]:
        """The untagged FLAGS and PERMANENTFLAGS of SELECT (RFC 3501 7.2.6), with every keyword
        known; a read-only folder permits none, and a folder at imap.max_keywords no new keyword
        (no "\\*")."""
        names = SYSTEM_FLAGS + "".join(" " + k for k in sorted(self.keywords))
        full = bool(self.max_keywords) and len(self.keywords) >= self.max_keywords
        permanent = "" if self.readonly else names if full else names + " \\*"
        return f"FLAGS ({names})", f"OK [PERMANENTFLAGS ({permanent})] flags permitted"

    def keywords_refused(self, keywords: Iterable[str], max_length: int) -> bool:
        """Whether adding these keywords to the folder would pass a bound (``keywords_refused``)."""
        return keywords_refused(self.keywords, keywords, self.max_keywords, max_length)

    def note_recent(self, lo: int, hi: int) -> None:
        if hi > lo and not self.rev2:
            self.recent_ranges.append((lo, hi))


__all__ = ["SelectedFolder", "flag_text", "keywords_refused", "split_flags", "SYSTEM_FLAGS", "STAR"]

"""SORT (RFC 5256, RFC 5957) and the gathering THREAD shares with it: the session's messages that
match the search, with the fields each sort key reads (cached at delivery: ``MailStore.sort_values``),
then ordered in Python.

Runs in a heavy-lane thread (``ImapSession.heavy``). A 100,000-message folder is read in
batches of short tuples; no header is parsed.
"""
from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter
from typing import Callable, Sequence

from .handlers_message import FETCH_BATCH, _search
from .selected import SelectedFolder
from .thread import ALGORITHMS, Columns

#: the stored value each sort key reads ("sent": the Date field, else the arrival time, RFC 5256 2.2)
KEY_COLUMNS = {"ARRIVAL": "arrival", "DATE": "sent", "SIZE": "size", "SUBJECT": "subject", "FROM": "from", "TO": "to",
               "CC": "cc", "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}
THREAD_COLUMNS = ("sent", "subject", "reply", "message_id", "thread_refs")
_ALL = (("ALL",),)


class Matched:
    """The session's messages that match a search: rows ``(seq, uid, *values)`` in sequence
    order, and for a search with a MODSEQ key the MODSEQ of each UID (RFC 7162 3.1.5)."""

    def __init__(self, names: tuple[str, ...], rows: list[tuple], modseqs: dict[int, int] | None) -> None:
        self.names = names
        self.rows = rows
        self.modseqs = modseqs

    def column(self, name: str) -> int:
        return 2 + self.names.index(name)


def gather(store, sel: SelectedFolder, names: tuple[str, ...], keys: tuple, with_modseq: bool) -> Matched:
    """The messages this session knows that match ``keys``, with the values ``names`` (in the
    thread pool)."""
    matching: dict[int, int] | None = None
    if keys != _ALL:
        matching = {uid: modseq for _, uid, modseq in _search(store, sel, keys, True)}
        if not matching:
            return Matched(names, [], matching if with_modseq else None)
    uids = sel.uids
    n = len(uids)
    out: list[tuple] = []
    i = 0
    after = 0
    while True:
        rows = store.sort_values(sel.account_id, sel.folder_id, names, after, sel.max_uid, FETCH_BATCH)
        last = bisect_left(uids, rows[-1][0], i) if rows else n
        if matching is None and last < n and uids[last] == rows[-1][0] and uids[i] == rows[0][0] \
                and last - i + 1 == len(rows):
            # the batch is exactly the session's next messages (the common case: every UID up to
            # the session's highest is one it knows): numbered in one go
            out.extend([(seq, *row) for seq, row in zip(range(i + 1, i + 1 + len(rows)), rows)])
            i += len(rows)
        else:
            for row in rows:
                uid = row[0]
                while i < n and uids[i] < uid:
                    i += 1
                if i < n and uids[i] == uid and (matching is None or uid in matching):
                    out.append((i + 1, *row))  # one this session has not been told of is left out
        if len(rows) < FETCH_BATCH:
            return Matched(names, out, matching if with_modseq else None)
        after = rows[-1][0]


def _key(found: Matched, key: str) -> Callable[[tuple], object]:
    return itemgetter(found.column(KEY_COLUMNS[key]))


def sort_messages(found: Matched, criteria: Sequence[tuple[str, bool]]) -> list[tuple]:
    """The rows in the order of ``criteria`` ((key, reversed), the first deciding first), then
    by sequence number (RFC 5256: REVERSE reverses its key only, never that last tie-break)."""
    rows = found.rows  # in sequence order already
    for key, reverse in reversed(criteria):  # stable sorts, the least significant key first
        rows.sort(key=_key(found, key), reverse=reverse)
    return rows


def sort_job(store, sel: SelectedFolder, criteria: tuple[tuple[str, bool], ...], keys: tuple,
             with_modseq: bool) -> tuple[list[tuple[int, int]], list[int] | None]:
    """SORT: (seq, uid) of the matching messages in order, and their MODSEQs if asked."""
    names = tuple(dict.fromkeys(KEY_COLUMNS[key] for key, _ in criteria))
    found = gather(store, sel, names, keys, with_modseq)
    rows = sort_messages(found, criteria)
    modseqs = [found.modseqs[r[1]] for r in rows] if found.modseqs is not None else None
    return [(r[0], r[1]) for r in rows], modseqs


def thread_job(store, sel: SelectedFolder, algorithm: str, keys: tuple, uid: bool) -> str:
    """THREAD: the thread-lists of the matching messages (by UID for UID THREAD)."""
    found = gather(store, sel, THREAD_COLUMNS, keys, False)
    if not found.rows:
        return ""
    seqs, uids, sent, subjects, replies, message_ids, refs = (list(c) for c in zip(*found.rows))
    return ALGORITHMS[algorithm](Columns(uids if uid else seqs, list(zip(sent, seqs)), subjects, replies,
                                         message_ids, refs))

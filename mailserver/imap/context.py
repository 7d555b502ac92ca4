"""RFC 5267 4 CONTEXT=SEARCH and CONTEXT=SORT: searches and sorts kept up to date.
``UID SEARCH RETURN (UPDATE)`` (or ``UID SORT RETURN (UPDATE)``) leaves a ``SearchContext`` on
the session; when the selected folder changes, only the messages that changed are searched again,
and the differences go out as ``ESEARCH ... ADDTO`` / ``REMOVEFROM``: position 0 for a SEARCH
(its result has no order); for a SORT, pairs (position uid) that the client applies one after
the other (RFC 5267 4.3.2, 4.3.3): removals from the last position back, additions in ascending
order of their final position. A removal costs no sort; an addition sorts the folder again on
the heavy lane (the sort keys, cached at delivery, never change, so that order is the old one
with the new messages in their places). Expunged messages are told before the EXPUNGE (or
VANISHED) responses that remove them (``contexts_expunged``), additions after the EXISTS that
announces them. The contexts end with the selection."""
from __future__ import annotations

from dataclasses import dataclass, field

from .codec import format_uid_set
from .search import Matcher, Message, columns_for, uses_key
from .selected import SelectedFolder

#: messages read per query when searching changed messages again
RECHECK_BATCH = 500


@dataclass
class SearchContext:
    """One updated search: its tag, its keys and the UIDs it now holds."""

    tag: str
    keys: tuple
    uids: set[int] = field(default_factory=set)
    #: a SORT's criteria ((key, reversed), ...), None for a SEARCH
    criteria: tuple | None = None
    #: a SORT's result in sort order
    order: list[int] = field(default_factory=list)


def updatable(keys: tuple) -> bool:
    """A search whose result follows from each message alone. Message sequence numbers shift
    with every expunge, so a SEQ key would need the whole folder searched again: refused
    (NOUPDATE), as RFC 5267 4.3.1 permits."""
    return not uses_key(keys, "SEQ")


def matching(store, sel: SelectedFolder, keys: tuple, uids: list[int]) -> set[int]:
    """Which of ``uids`` (ascending, known to the session) match ``keys`` now (in the thread
    pool). Only these rows are read."""
    cols = tuple(sorted(columns_for(keys)))
    matcher = Matcher(len(sel.uids), sel.max_uid, sel.is_recent)
    out: set[int] = set()
    for i in range(0, len(uids), RECHECK_BATCH):
        part = uids[i:i + RECHECK_BATCH]
        ranges: list[tuple[int, int]] = []
        for u in part:  # runs of consecutive UIDs, one range each
            if ranges and ranges[-1][1] == u - 1:
                ranges[-1] = (ranges[-1][0], u)
            else:
                ranges.append((u, u))
        for row in store.fetch(sel.account_id, sel.folder_id, part[0], part[-1], len(part), cols, ranges):
            seq = sel.seq_of(row.uid)
            msg = Message(row)
            if seq is not None and all(matcher.match(k, msg, seq) for k in keys):
                out.add(row.uid)
    return out


def update_lines(ctx: SearchContext, gone: list[int], checked: list[int], matched: set[int]) -> list[str]:
    """Fold expunged UIDs and the new result of the re-checked ones into ``ctx``; the untagged
    ESEARCH lines that tell the client (REMOVEFROM before ADDTO)."""
    checked_set = set(checked)
    removed = sorted((ctx.uids & set(gone)) | (ctx.uids & checked_set - matched))
    added = sorted(matched - ctx.uids)
    ctx.uids.difference_update(removed)
    ctx.uids.update(added)
    head = f'ESEARCH (TAG "{ctx.tag}") UID'
    lines = []
    if removed:
        lines.append(f"{head} REMOVEFROM (0 {format_uid_set(removed)})")
    if added:
        lines.append(f"{head} ADDTO (0 {format_uid_set(added)})")
    return lines


def removals(ctx: SearchContext, gone: list[int], checked: list[int], matched: set[int]) -> str | None:
    """A SORT context: fold out the expunged and no longer matching messages; the REMOVEFROM
    pairs that tell it (the last position first, so each holds when applied), or None."""
    out = (ctx.uids & set(gone)) | (ctx.uids & set(checked) - matched)
    if not out:
        return None
    positions = [(i + 1, u) for i, u in enumerate(ctx.order) if u in out]
    ctx.order = [u for u in ctx.order if u not in out]
    ctx.uids.difference_update(out)
    return " ".join(f"{p} {u}" for p, u in reversed(positions))


def additions(ctx: SearchContext, order: list[int]) -> str | None:
    """A SORT context sorted again (``order``): the ADDTO pairs of the messages new to it, in
    ascending order of position, or None."""
    added = [(i + 1, u) for i, u in enumerate(order) if u not in ctx.uids]
    ctx.order = order
    ctx.uids = set(order)
    return " ".join(f"{p} {u}" for p, u in added) or None


def contexts_expunged(contexts, gone: list[int]) -> list[str]:
    """Fold the expunged UIDs ``gone`` out of every context; the REMOVEFROM lines that tell it
    (no search needed: an expunged message leaves every result)."""
    lines: list[str] = []
    for ctx in contexts:
        if ctx.criteria is None:
            lines += update_lines(ctx, gone, [], set())
            continue
        removed = removals(ctx, gone, [], set())
        if removed:
            lines.append(f'ESEARCH (TAG "{ctx.tag}") UID REMOVEFROM ({removed})')
    return lines


def sorted_uids(store, sel: SelectedFolder, criteria: tuple, keys: tuple) -> list[int]:
    """The UIDs that match ``keys`` in the order of ``criteria`` (in the heavy lane)."""
    from .sort import sort_job  # sort reads through handlers_message, which needs the session

    return [uid for _, uid in sort_job(store, sel, criteria, keys, False)[0]]

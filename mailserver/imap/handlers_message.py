"""Message commands of the selected state: FETCH, STORE, COPY, MOVE, SEARCH, EXPUNGE (and UID forms),
with CONDSTORE (RFC 7162: CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ), ESEARCH (RFC 4731, and
for every SEARCH under IMAP4rev2), SEARCHRES (RFC 5182: RETURN (SAVE) and "$"), PARTIAL (RFC 9394:
RETURN (PARTIAL) and the FETCH modifier) and BINARY (RFC 3516: FETCH BINARY[part], BINARY.SIZE;
the APPEND side is in handlers_mailbox).

FETCH is streamed: rows are read in UID order in batches (keyset paging) and rendered in the
store's thread pool, so a ``UID FETCH 1:* (FLAGS)`` of 100,000 messages never sits in memory
whole and the event loop only writes. SEARCH and FETCH of message bodies run on the heavy lane
(``ServerContext.run_heavy``): however many a user sends, logins and deliveries do not wait.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right

from ..errors import NotFound
from ..store import api
from ..store.api import SEEN
from . import fetch as F
from . import parser as P
from . import responses as R
from .context import SearchContext, updatable
from .codec import SeqSet, format_uid_set
from .commands import CancelUpdate, Copy, Expunge, Fetch, FetchAtt, Search, Store
from .registry import SEL, Cap, command
from .responses import Reply
from .search import Matcher, Message, columns_for as search_columns, uses_modseq
from .search_syntax import partial_option
from .selected import SelectedFolder, flag_text, split_flags
from .session import ImapSession

#: RFC 5267 4: searches kept up to date (sorts: CONTEXT=SORT, handlers_sort)
CONTEXT_SEARCH = "CONTEXT=SEARCH"

CONDSTORE, QRESYNC, UIDPLUS = Cap("CONDSTORE"), Cap("QRESYNC"), Cap("UIDPLUS")
#: FETCH items of RFC 8970, RFC 8474 (with MAILBOXID in SELECT, STATUS and CREATE) and RFC 8514
#: (with the SAVED* search keys)
PREVIEW, OBJECTID, SAVEDATE = Cap("PREVIEW"), Cap("OBJECTID"), Cap("SAVEDATE")
FETCH_BATCH = 10000
#: FETCH columns of the hot path (FLAGS, and MODSEQ under CONDSTORE)
_FLAG_COLUMNS = (("flags", "keywords"), ("flags", "keywords", "modseq"))


def _ranges(s: ImapSession, seqset, by_uid: bool) -> list[tuple[int, int]] | None:
    try:
        return s.selected.uid_ranges(seqset, by_uid)
    except IndexError:
        return None


def _render_batch(store, sel: SelectedFolder, lo: int, hi: int, ranges, atts: tuple[FetchAtt, ...],
                  columns: tuple[str, ...], with_uid: bool,
                  changedsince: int | None = None, light: bool = False,
                  within: tuple[int, int] | None = None) -> tuple[bytes | None, int | None, set[str]] | None:
    """One batch of FETCH lines (in the thread pool), the UID to continue after (None: done) and
    the keywords in them that the session has not announced yet (``announce_keywords``).
    ``light``: on the store's pool, not the heavy lane; a batch that would have to read
    messages there (a PREVIEW not cached at delivery) comes back as None, for the heavy lane.
    ``within``: None if the messages between ``lo`` and ``hi`` are more or bigger (store.fetch)."""
    rows = store.fetch(sel.account_id, sel.folder_id, lo, hi, FETCH_BATCH, columns, ranges if len(ranges) > 1 else None,
                       changedsince, within)
    if rows is None:
        return None
    if light and "preview" in columns and F.needs_raw(atts, rows):
        return None, lo, set()
    uids = sel.uids
    recent_floor = min((r[0] for r in sel.recent_ranges), default=None)
    out = []
    i = bisect_left(uids, rows[0][0]) if rows else 0
    if columns in _FLAG_COLUMNS and all(a.name in ("UID", "FLAGS", "MODSEQ") for a in atts):
        # The hot path (a client opening a big folder, with or without CONDSTORE): no per-row
        # attribute lookups.
        cache: dict[tuple[int, str | None, bool], bytes] = {}
        one_range = sel.recent_ranges[0] if len(sel.recent_ranges) == 1 else None
        n = len(uids)
        with_modseq = len(columns) == 3
        for row in rows:
            uid, flags, keywords = row[0], row[1], row[2]
            while i < n and uids[i] < uid:
                i += 1
            if i >= n or uids[i] != uid:
                continue  # not yet announced to this client
            if one_range is not None:
                recent = one_range[0] < uid <= one_range[1]
            else:
                recent = recent_floor is not None and uid > recent_floor and sel.is_recent(uid)
            text = cache.get((flags, keywords, recent))
            if text is None:
                text = cache[(flags, keywords, recent)] = flag_text(flags, keywords, recent).encode()
            if with_modseq:
                out.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (i + 1, uid, text, row[3]))
            else:
                out.append(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (i + 1, uid, text))
        unknown = sel.unknown_keywords(k for _, k, _ in cache)
    else:
        has_raw = "raw" in columns
        for row in rows:
            while i < len(uids) and uids[i] < row.uid:
                i += 1
            if i >= len(uids) or uids[i] != row.uid:
                continue
            if has_raw:
                loader = (lambda r=row.raw: r)
            else:
                loader = (lambda u=row.uid: store.message_raw(sel.account_id, sel.folder_id, u))
            out.append(F.render(i + 1, row, atts, sel.is_recent(row.uid), with_uid, loader))
        unknown = sel.unknown_keywords(row.keywords for row in rows) if "keywords" in columns else set()
    nxt = rows[-1][0] + 1 if len(rows) == FETCH_BATCH else None
    return b"".join(out), nxt, unknown


#: "*" in a UID set of expunged messages: any UID (the store clips it at UIDNEXT - 1)
_ANY_UID = 0xFFFFFFFF
_FLAGS_MODSEQ = (FetchAtt("UID"), FetchAtt("FLAGS"), FetchAtt("MODSEQ"))


def ranges_text(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in ranges)


async def send_vanished_earlier(s: ImapSession, sel: SelectedFolder, modseq: int, uids: SeqSet | None) -> None:
    """RFC 7162 3.2.5/3.2.6: ``* VANISHED (EARLIER) uid-set`` of the UIDs in ``uids`` (None:
    any) expunged after ``modseq``; those still in the session's view are left to the
    VANISHED that tells it of their expunge."""
    ranges = uids.resolve(_ANY_UID) if uids is not None else None
    gone = await s.ctx.run_read(s.store.vanished_since, sel.account_id, sel.folder_id, modseq, ranges, sel.uids)
    if gone:
        await s.untagged("VANISHED (EARLIER) " + ranges_text(gone))


async def send_changed_since(s: ImapSession, sel: SelectedFolder, modseq: int, uids: SeqSet | None) -> None:
    """RFC 7162 3.2.5: ``* n FETCH (UID u FLAGS (...) MODSEQ (m))`` of the messages (in
    ``uids``, None: all) whose MODSEQ is above ``modseq``, streamed as FETCH is."""
    ranges = sel.uid_ranges(uids if uids is not None else SeqSet.parse("1:*"), True)
    if not ranges:
        return
    await _send_fetch(s, s.ctx.run_read, sel, ranges, _FLAGS_MODSEQ, True, modseq)


#: a FETCH of message bodies this small in all (and of few messages) is a cheap read: on the
#: read lane (or the loop, ``ServerContext.run_read``), not the heavy lane with its per-user gate
SMALL_FETCH_BYTES = 64 * 1024
SMALL_FETCH_MESSAGES = 16


def _render_small(store, sel: SelectedFolder, lo: int, hi: int, ranges, atts: tuple[FetchAtt, ...],
                  columns: tuple[str, ...], with_uid: bool, changedsince: int | None):
    """``_render_batch`` of a FETCH that reads message bodies, if the messages between ``lo``
    and ``hi`` are few and small (their sizes read with them: one round trip on PostgreSQL);
    else None."""
    return _render_batch(store, sel, lo, hi, ranges, atts, columns, with_uid, changedsince, True,
                         (SMALL_FETCH_MESSAGES, SMALL_FETCH_BYTES))


async def _send_fetch(s: ImapSession, run, sel: SelectedFolder, ranges, atts: tuple[FetchAtt, ...], with_uid: bool,
                      changedsince: int | None) -> None:
    """The FETCH responses for ``ranges``, batch by batch (``run``: the lane for the batches);
    a keyword new to the session is announced before the batch that carries it. A few small
    messages' bodies are a cheap read (``_render_small``), not the heavy lane's."""
    lo, hi = ranges[0][0], ranges[-1][1]
    columns = F.columns_for(atts)
    if run == s.heavy and hi - lo < SMALL_FETCH_MESSAGES * 4:
        done = await s.ctx.run_read(_render_small, s.store, sel, lo, hi, ranges, atts, columns, with_uid, changedsince)
        if done is not None and done[0] is not None and done[1] is None:
            chunk, _, unknown = done
            if unknown:
                await s.announce_keywords(unknown)
            await s.send(chunk)
            return
    while lo is not None and lo <= hi:
        chunk, nxt, unknown = await run(_render_batch, s.store, sel, lo, hi, ranges, atts, columns, with_uid,
                                        changedsince, run != s.heavy)
        if chunk is None:
            chunk, nxt, unknown = await s.heavy(_render_batch, s.store, sel, lo, hi, ranges, atts, columns, with_uid,
                                                changedsince)
        lo = nxt
        if unknown:
            await s.announce_keywords(unknown)
        await s.send(chunk)
        if lo is not None:
            await s.flush()  # streamed: a batch goes out before the next is read (the last with the reply)


async def send_fetch_of(s: ImapSession, uids: list[int], atts: tuple[FetchAtt, ...]) -> None:
    """FETCH responses (with UID) of ``atts`` for these UIDs of the selected folder (ascending),
    as NOTIFY's MessageNew (fetch-att ...) sends them for new messages (RFC 5465 5.2). Nothing
    is marked \\Seen: a notification is not the client reading the message."""
    sel = s.selected
    ranges: list[tuple[int, int]] = []
    for u in uids:
        if ranges and ranges[-1][1] == u - 1:
            ranges[-1] = (ranges[-1][0], u)
        else:
            ranges.append((u, u))
    if not any(a.name == "UID" for a in atts):
        atts = (FetchAtt("UID"),) + atts
    if s.condstore and any(a.name == "FLAGS" for a in atts) and not any(a.name == "MODSEQ" for a in atts):
        atts = atts + (FetchAtt("MODSEQ"),)
    run = s.heavy if "raw" in F.columns_for(atts) else s.ctx.run
    await _send_fetch(s, run, sel, ranges, atts, True, None)


def _saw_own_write(sel: SelectedFolder, stored: api.Stored) -> None:
    # Nothing else happened between our last look and our write: our own change is known.
    if stored.modseq_before and stored.modseq_before == sel.modseq:
        sel.modseq = stored.modseq_after


@command("FETCH", SEL, P.fetch, cap=(CONDSTORE, "BINARY", PREVIEW, OBJECTID, SAVEDATE, "PARTIAL"), expunge=False)
@command("UID FETCH", SEL, P.fetch, expunge=True)
async def do_fetch(s: ImapSession, cmd: Fetch) -> Reply:
    sel = s.selected
    if cmd.vanished and not s.qresync:
        return R.BAD_NO_QRESYNC  # RFC 7162 3.2.6
    ranges = _ranges(s, cmd.seqset, cmd.uid)
    if ranges is None:
        return R.BAD_SYNTAX
    if cmd.vanished:
        await send_vanished_earlier(s, sel, cmd.changedsince, cmd.seqset)
    if cmd.partial is not None and ranges:
        ranges = _window(sel, ranges, *cmd.partial)
    if not ranges:
        return R.OK_DONE
    atts = cmd.atts
    if cmd.changedsince is not None or any(a.name == "MODSEQ" for a in atts):
        await s.enable_condstore()
    if F.sets_seen(atts) and not sel.readonly:
        stored = await s.ctx.run_write(s.store.store_flags, sel.account_id, sel.folder_id, ranges, "+", SEEN, (),
                                       flags_only=True, owner=s.account_id)
        _saw_own_write(sel, stored)
        if stored.rows and not any(a.name == "FLAGS" for a in atts):
            atts = atts + (FetchAtt("FLAGS"),)
    if s.condstore and not any(a.name == "MODSEQ" for a in atts) and (
            cmd.changedsince is not None or any(a.name == "FLAGS" for a in atts)):
        atts = atts + (FetchAtt("MODSEQ"),)
    # message bodies (sections, RFC822.*) cost what the client asks for: the heavy lane; flags
    # alone are the cheap read of every client's every sync: the read lane
    columns = F.columns_for(atts)
    run = s.heavy if "raw" in columns else s.ctx.run_read if columns in _FLAG_COLUMNS else s.ctx.run
    await _send_fetch(s, run, sel, ranges, atts, cmd.uid, cmd.changedsince)
    return R.OK_DONE


@command("STORE", SEL, P.store, expunge=False)
@command("UID STORE", SEL, P.store, expunge=True)
async def do_store(s: ImapSession, cmd: Store) -> Reply:
    sel = s.selected
    if sel.readonly:
        return R.NO_READONLY
    ranges = _ranges(s, cmd.seqset, cmd.uid)
    if ranges is None:
        return R.BAD_SYNTAX
    if cmd.unchangedsince is not None:
        await s.enable_condstore()
    bits, keywords = split_flags(cmd.flags)
    if cmd.mode != "-" and sel.keywords_refused(keywords, s.config.imap.max_keyword_length):
        return s.keyword_limit()
    stored = await s.run_looking(s.store.store_flags, sel.account_id, sel.folder_id, ranges, cmd.mode, bits, keywords,
                                 cmd.unchangedsince, flags_only=True)
    _saw_own_write(sel, stored)
    await s.announce_keywords(r[2] for r in stored.rows)
    changed_any = stored.modseq_after != stored.modseq_before
    for uid, flags, kws, modseq in stored.rows:
        seq = sel.seq_of(uid)
        if seq is None:
            continue
        uid_part = f"UID {uid} " if cmd.uid else ""
        if not cmd.silent:
            tail = f" MODSEQ ({modseq})" if s.condstore else ""
            await s.untagged(f"{seq} FETCH ({uid_part}FLAGS {flag_text(flags, kws, sel.is_recent(uid))}{tail})")
        elif s.condstore and changed_any and modseq == stored.modseq_after:
            # RFC 7162 3.1.3: even with .SILENT, the new MODSEQ of each changed message
            await s.untagged(f"{seq} FETCH ({uid_part}MODSEQ ({modseq}))")
    if stored.modified:
        if cmd.uid:
            refused = stored.modified
        else:
            refused = [n for n in (sel.seq_of(u) for u in stored.modified) if n is not None]
        return R.OK_MODIFIED.with_code(f"MODIFIED {format_uid_set(refused)}")
    return R.OK_DONE


@command("COPY", SEL, P.copy, expunge=True)
@command("UID COPY", SEL, P.copy, cap=UIDPLUS, expunge=True)
@command("MOVE", SEL, P.copy, cap="MOVE", expunge=True)
@command("UID MOVE", SEL, P.copy, expunge=True)
async def do_copy(s: ImapSession, cmd: Copy) -> Reply:
    sel = s.selected
    if cmd.move and sel.readonly:
        return R.NO_READONLY
    ranges = _ranges(s, cmd.seqset, cmd.uid)
    if ranges is None:
        return R.BAD_SYNTAX
    if not ranges:
        return R.OK_DONE
    try:
        copied = await s.run_looking(s.store.copy, s.account_id, sel.folder_id, ranges, cmd.mailbox,
                                     cmd.move, s.config.accounts.quota_bytes, big=True)
    except NotFound:
        return R.NO_TRYCREATE
    if not copied.source_uids:
        return R.OK_DONE
    done = R.OK_DONE.with_code(f"COPYUID {copied.uidvalidity} {format_uid_set(copied.source_uids)} "
                               f"{format_uid_set(copied.dest_uids)}")
    if cmd.move:
        # RFC 6851: COPYUID in an untagged OK before the EXPUNGEs that the update below sends.
        s.pending = True
        await s.untagged(R.OK_MOVED.with_code(done.code).line())
        return R.OK_DONE
    if copied.dest_folder_id == sel.folder_id:
        s.pending = True
    return done


def _search(store, sel: SelectedFolder, keys: tuple, charset_ok: bool) -> list[tuple[int, int, int]]:
    """(seq, uid, modseq) of the matching messages this session knows (in the thread pool);
    modseq is 0 unless a MODSEQ key asked for it."""
    cols = tuple(sorted(search_columns(keys)))
    with_modseq = "modseq" in cols
    matcher = Matcher(len(sel.uids), sel.max_uid, sel.is_recent, frozenset(sel.saved))
    uids = sel.uids

    def seq_of(uid: int) -> int:  # 0: not yet told to this session
        i = bisect_left(uids, uid)
        return i + 1 if i < len(uids) and uids[i] == uid else 0

    def match(row) -> bool:
        seq = seq_of(row.uid)
        if not seq:
            return False
        msg = Message(row)
        return all(matcher.match(k, msg, seq) for k in keys)

    return [(seq_of(row.uid), row.uid, row.modseq if with_modseq else 0)
            for row in store.search(sel.account_id, sel.folder_id, 1, sel.max_uid, cols, match)]


def _window(sel: SelectedFolder, ranges: list[tuple[int, int]], low: int, high: int) -> list[tuple[int, int]]:
    """RFC 9394 3.2 FETCH (PARTIAL low:high): the UID ranges of that window of the addressed
    messages, counted in mailbox order (before CHANGEDSINCE filters them, RFC 9394 3.4)."""
    spans = [(bisect_left(sel.uids, lo), bisect_right(sel.uids, hi)) for lo, hi in ranges]
    count = sum(b - a for a, b in spans)
    window = _partial_slice(count, low, high)
    start, stop = window.start, min(window.stop, count)
    out: list[tuple[int, int]] = []
    seen = 0
    for a, b in spans:  # positions start..stop of the concatenated spans, span by span
        lo, hi = max(a, a + start - seen), min(b, a + stop - seen)
        if lo < hi:
            out.append((sel.uids[lo], sel.uids[hi - 1]))
        seen += b - a
    return out


def _partial_slice(count: int, low: int, high: int) -> slice:
    """The results an RFC 9394 partial range selects out of ``count`` (1 the first, -1 the
    last; a range past the end selects what is there, maybe nothing)."""
    near, far = sorted((abs(low), abs(high)))
    if low > 0:
        return slice(near - 1, far)
    return slice(max(count - far, 0), max(count - near + 1, 0))


def esearch_text(tag: str, uid: bool, opts: tuple[str, ...], numbers: list[int], modseqs: list[int] | None) -> str:
    """RFC 4731 ESEARCH for message numbers in mailbox order (ESORT: in sort order; RETURN ()
    means ALL); no MIN, MAX or ALL when nothing matched. PARTIAL (RFC 5267 4.4, RFC 9394) answers
    the range asked for, with NIL if no result falls in it. ``modseqs`` (with a MODSEQ key, RFC
    7162 3.1.5): the highest MODSEQ of the messages returned. UPDATE (RFC 5267 4.3) adds nothing
    here; alone, it answers ALL, the result the updates then change."""
    opts = tuple(o for o in opts if o not in ("UPDATE", "SAVE")) or ("ALL",)
    partial = partial_option(opts)
    out = f'ESEARCH (TAG "{tag}")' + (" UID" if uid else "")
    if numbers:
        if "MIN" in opts:
            out += f" MIN {numbers[0]}"
        if "MAX" in opts:
            out += f" MAX {numbers[-1]}"
    if "COUNT" in opts:
        out += f" COUNT {len(numbers)}"
    if numbers and "ALL" in opts:
        out += " ALL " + format_uid_set(numbers)
    returned: list[int] = []
    if partial is not None:
        text, low, high = partial
        picked = range(len(numbers))[_partial_slice(len(numbers), low, high)]
        out += f" PARTIAL ({text} {format_uid_set([numbers[i] for i in picked]) if picked else 'NIL'})"
        returned = [modseqs[i] for i in picked] if modseqs else []
    if numbers and modseqs:
        if "ALL" in opts or "COUNT" in opts:
            highest = max(modseqs)
        else:
            highest = max((modseqs[0] if "MIN" in opts else 0), (modseqs[-1] if "MAX" in opts else 0), *returned)
        if highest:
            out += f" MODSEQ {highest}"
    return out


@command("SEARCH", SEL, P.search, cap=("ESEARCH", "SEARCHRES"), expunge=False)
@command("UID SEARCH", SEL, P.search, expunge=True)
async def do_search(s: ImapSession, cmd: Search) -> Reply:
    sel = s.selected
    with_modseq = uses_modseq(cmd.criteria)
    if with_modseq:
        await s.enable_condstore()
    hits = await s.heavy(_search, s.store, sel, cmd.criteria, True) if sel.uids else []
    numbers = [uid if cmd.uid else seq for seq, uid, _ in hits]
    modseqs = [m for _, _, m in hits] if with_modseq else None
    opts = cmd.return_opts
    if opts is not None and "SAVE" in opts:
        opts = save_result(sel, opts, [uid for _, uid, _ in hits])
        if not opts:
            return R.OK_DONE  # RFC 5182 2.4: SAVE alone answers nothing but OK
    if opts is not None or s.rev2:  # RFC 9051 6.4.4: IMAP4rev2 answers with ESEARCH
        await s.untagged(esearch_text(cmd.tag, cmd.uid, opts or ("ALL",), numbers, modseqs))
    else:
        tail = f" (MODSEQ {max(modseqs)})" if modseqs else ""
        await s.untagged("SEARCH" + "".join(f" {n}" for n in numbers) + tail)
    if cmd.return_opts is not None and "UPDATE" in cmd.return_opts:
        return _keep_updated(s, cmd, [uid for _, uid, _ in hits])
    return R.OK_DONE


def save_result(sel: SelectedFolder, opts: tuple[str, ...], uids: list[int]) -> tuple[str, ...]:
    """RFC 5182 2.4: keep the result (UIDs in result order: mailbox order for SEARCH, sort order
    for SORT, RFC 5267 3) for "$"; with MIN or MAX but neither ALL nor COUNT, only those. The
    other return options, left to answer (none: SAVE alone, answered by OK only)."""
    if uids and ("MIN" in opts or "MAX" in opts) and not ("ALL" in opts or "COUNT" in opts):
        uids = ([uids[0]] if "MIN" in opts else []) + ([uids[-1]] if "MAX" in opts else [])
    sel.saved = set(uids)
    return tuple(o for o in opts if o != "SAVE")


def _keep_updated(s: ImapSession, cmd: Search, uids: list[int]) -> Reply:
    """RFC 5267 4.3: keep this search's result up to date, or refuse with NO [NOUPDATE] (the
    answer above stands): for SEARCH by sequence number or with a SEQ key (numbers that every
    expunge shifts), and past imap.max_search_updates for the session. The same tag again
    replaces its search."""
    refused = R.NO_NOUPDATE.with_code(f'NOUPDATE "{cmd.tag}"')
    if not cmd.uid or not updatable(cmd.criteria):
        return refused
    if cmd.tag not in s.contexts and len(s.contexts) >= s.config.imap.max_search_updates:
        return refused
    s.contexts[cmd.tag] = SearchContext(cmd.tag, cmd.criteria, set(uids))
    return R.OK_DONE


@command("CANCELUPDATE", SEL, P.cancel_update, cap=CONTEXT_SEARCH, expunge=False)
async def do_cancel_update(s: ImapSession, cmd: CancelUpdate) -> Reply:
    """RFC 5267 4.3.5: stop updating these searches; a tag not being updated is no error."""
    for tag in cmd.tags:
        s.contexts.pop(tag, None)
    return R.OK_DONE


@command("EXPUNGE", SEL, P.expunge, expunge=True)
@command("UID EXPUNGE", SEL, P.expunge, cap=UIDPLUS, expunge=True)
async def do_expunge(s: ImapSession, cmd: Expunge) -> Reply:
    sel = s.selected
    if sel.readonly:
        return R.NO_READONLY
    ranges = None
    if cmd.seqset is not None:
        ranges = _ranges(s, cmd.seqset, True)
        if not ranges:
            return R.OK_DONE
    await s.run_looking(s.store.expunge, sel.account_id, sel.folder_id, ranges, expunges=True)
    s.pending = True
    return R.OK_DONE

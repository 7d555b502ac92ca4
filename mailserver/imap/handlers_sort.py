"""SORT and UID SORT (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO, RFC 5267 ESORT), THREAD and
UID THREAD (RFC 5256 ORDEREDSUBJECT, REFERENCES): on the heavy lane, like SEARCH, over the
fields cached at delivery (``sort.py``, ``thread.py``)."""
from __future__ import annotations

from . import responses as R
from .context import SearchContext, updatable
from .handlers_message import esearch_text, save_result
from .registry import SEL, command
from .responses import Reply
from .search import uses_modseq
from .session import ImapSession
from .sort import sort_job, thread_job
from .search_syntax import partial_option
from .sort_syntax import Sort, Thread, parse_sort, parse_thread

#: RFC 5256 SORT, RFC 5957 SORT=DISPLAY, RFC 5267 ESORT and CONTEXT=SORT
SORT_CAPS = ("SORT", "SORT=DISPLAY", "ESORT", "CONTEXT=SORT")
THREAD_CAPS = ("THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES")


async def _condstore(s: ImapSession, keys: tuple) -> bool:
    """A MODSEQ search key: CONDSTORE is enabled (RFC 7162 3.1, with its HIGHESTMODSEQ the first
    time) and a SORT answer carries MODSEQ."""
    if uses_modseq(keys):
        await s.enable_condstore()
        return True
    return False


def _sort_answer(store, sel, cmd: Sort, opts: tuple[str, ...] | None, with_modseq: bool,
                 quiet: bool) -> tuple[str | None, list[int]]:
    """The untagged answer to SORT with return options ``opts`` (in the heavy lane: 100,000
    numbers are not formatted on the event loop), None if ``quiet`` (RETURN (SAVE) alone), and
    the UIDs in sort order."""
    ordered, modseqs = sort_job(store, sel, cmd.criteria, cmd.search, with_modseq) if sel.uids else ([], None)
    numbers = [uid if cmd.uid else seq for seq, uid in ordered]
    uids = [uid for _, uid in ordered]
    if quiet:
        return None, uids
    if opts is not None:
        # RFC 5267 ESORT: MIN and MAX are the first and last in sort order, ALL is in sort order
        return esearch_text(cmd.tag, cmd.uid, opts, numbers, modseqs), uids
    tail = f" (MODSEQ {max(modseqs)})" if modseqs else ""  # RFC 7162 3.1.5
    return "SORT" + "".join([f" {n}" for n in numbers]) + tail, uids


@command("SORT", SEL, parse_sort, cap=SORT_CAPS, expunge=False)
@command("UID SORT", SEL, parse_sort, expunge=True)
async def do_sort(s: ImapSession, cmd: Sort) -> Reply:
    """SAVE (RFC 5182 with RFC 5267 ESORT) keeps the result for "$" as SEARCH's does, MIN and
    MAX being the first and last in sort order; alone, it answers nothing but OK."""
    with_modseq = await _condstore(s, cmd.search)
    opts = cmd.return_opts
    saving = opts is not None and "SAVE" in opts
    if saving:
        opts = tuple(o for o in opts if o != "SAVE")
    sel = s.selected
    text, uids = await s.heavy(_sort_answer, s.store, sel, cmd, opts, with_modseq, saving and not opts)
    if saving and s.selected is sel:
        save_result(sel, cmd.return_opts, uids)
    if text is not None:
        await s.untagged(text)
    if cmd.return_opts is not None and "UPDATE" in cmd.return_opts:
        return _keep_sorted(s, cmd, uids)
    return R.OK_DONE


def _keep_sorted(s: ImapSession, cmd: Sort, uids: list[int]) -> Reply:
    """RFC 5267 4.3 CONTEXT=SORT: keep this UID SORT's result up to date (``context``), or
    refuse with NO [NOUPDATE] as for SEARCH: by sequence number, with a SEQ key, with PARTIAL
    (a page's updates are not offered), past imap.max_search_updates for the session."""
    refused = R.NO_NOUPDATE.with_code(f'NOUPDATE "{cmd.tag}"')
    if not cmd.uid or not updatable(cmd.search) or partial_option(cmd.return_opts):
        return refused
    if cmd.tag not in s.contexts and len(s.contexts) >= s.config.imap.max_search_updates:
        return refused
    s.contexts[cmd.tag] = SearchContext(cmd.tag, cmd.search, set(uids), cmd.criteria, list(uids))
    return R.OK_DONE


@command("THREAD", SEL, parse_thread, cap=THREAD_CAPS, expunge=False)
@command("UID THREAD", SEL, parse_thread, expunge=True)
async def do_thread(s: ImapSession, cmd: Thread) -> Reply:
    await _condstore(s, cmd.search)
    text = ""
    if s.selected.uids:
        text = await s.heavy(thread_job, s.store, s.selected, cmd.algorithm, cmd.search, cmd.uid)
    await s.untagged("THREAD" + (" " + text if text else ""))
    return R.OK_DONE

"""SORT and UID SORT (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO, RFC 5267 ESORT), THREAD and
UID THREAD (RFC 5256 ORDEREDSUBJECT, REFERENCES): on the heavy lane, like SEARCH, over the
fields cached at delivery (``sort.py``, ``thread.py``)."""
from __future__ import annotations

from .handlers_message import esearch_text
from . import responses as R
from .search import uses_modseq
from .session import SELECTED, ImapSession, handler
from .sort import sort_job, thread_job
from .sort_syntax import Sort, Thread

SEL = frozenset({SELECTED})


def _condstore(s: ImapSession, keys: tuple) -> bool:
    """A MODSEQ search key: CONDSTORE is enabled (RFC 7162 3.1) and the answer carries MODSEQ."""
    if uses_modseq(keys):
        s.condstore = True
        return True
    return False


def _sort_answer(store, sel, cmd: Sort, with_modseq: bool) -> str:
    """The untagged answer to SORT (in the heavy lane: 100,000 numbers are not formatted on
    the event loop)."""
    ordered, modseqs = sort_job(store, sel, cmd.criteria, cmd.search, with_modseq) if sel.uids else ([], None)
    numbers = [uid if cmd.uid else seq for seq, uid in ordered]
    if cmd.return_opts is not None:
        # RFC 5267 ESORT: MIN and MAX are the first and last in sort order, ALL is in sort order
        return esearch_text(cmd.tag, cmd.uid, cmd.return_opts, numbers, modseqs)
    tail = f" (MODSEQ {max(modseqs)})" if modseqs else ""  # RFC 7162 3.1.5
    return "SORT" + "".join([f" {n}" for n in numbers]) + tail


@handler("SORT", SEL)
async def do_sort(s: ImapSession, cmd: Sort):
    with_modseq = _condstore(s, cmd.search)
    await s.untagged(await s.heavy(_sort_answer, s.store, s.selected, cmd, with_modseq))
    return "OK", R.OK_DONE


@handler("THREAD", SEL)
async def do_thread(s: ImapSession, cmd: Thread):
    _condstore(s, cmd.search)
    text = ""
    if s.selected.uids:
        text = await s.heavy(thread_job, s.store, s.selected, cmd.algorithm, cmd.search, cmd.uid)
    await s.untagged("THREAD" + (" " + text if text else ""))
    return "OK", R.OK_DONE

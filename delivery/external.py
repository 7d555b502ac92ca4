"""Stage `deliver` in external mode (``store.mode = "external"``): the notices go by LMTP to the
mail store the city already runs (mailserver/store/external.py); the keys, the rows' states and
the drop's counts stay in civicmail's store, as in local mode.

A batch in three steps, since a transaction cannot span two servers:

1. *claim*: one transaction records each new notice's idempotency key with state 'sending'
   (the unique key decides between two writers, as in local mode);
2. *send*: every notice over LMTP, each mailbox's own reply (RFC 2033): 250 delivered, 5xx the
   row fails with the server's reply, 4xx tried again for lmtp.deferred_retry_seconds, then the
   row fails (both retryable: `civicmail drop retry`); no answer at all is tried again for
   lmtp.retry_seconds, then the run stops;
3. *record*: one transaction clears 'sending' on the delivered notices, deletes the keys of the
   failed ones (so a retry may send them), and writes every row's state and the drop's counts.

What holds: a row is reported delivered only after the store's 250 for it; a notice recorded
delivered is never sent again (a rerun, a copy of the file, `--force`). A run that stops between
(1) and (3) (a crash, SIGKILL, a server that stops answering mid-batch) leaves that batch's keys
'sending' and its rows unrecorded; running the drop again resumes there and sends those notices
again, with the same Message-ID (derived from the key). Where the first copy was already stored,
that is the one duplicate possible, and the external store can drop it by that Message-ID
(a Sieve ``duplicate`` rule, RFC 7352; README, "External mail store"). At least once, then, and
exactly once with that rule; never lost, never reported delivered without the 250.
"""
from __future__ import annotations

from collections import Counter

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from mailserver.identity.keys import IdKeyring
from mailserver.store import Store
from mailserver.store.counters import count_notices
from mailserver.store.external import ExternalStoreUnavailable, LmtpStore, Outgoing, Reply
from mailserver.store.models import Account, Drop, Notice, utcnow
from mailserver.store.outage import retrying

from . import reasons, stagecpu
from .applications import thread_into_applications
from .deliver import (KEY_CHUNK, NOTICE_COLUMNS, DropTakenOver, _insert_rows, _undo_delivered, locked_drop, notice_rows,
                      record_rows)
from .rowstate import DELIVERED, DUPLICATE, FAILED, RowState
from .stagecpu import StageCpu

SENDING = "sending"
EXTERNAL_NOTICE_COLUMNS = (*NOTICE_COLUMNS, "state")


def notice_states(session, pairs: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[str | None, int | None]]:
    """(account id, key) -> (state, drop id) of the pairs already in ``notice``."""
    return {(a, k): (state, drop_id) for a, k, state, drop_id in notice_rows(session, pairs, ("n.state", "n.drop_id"))}


def deliver_batch_external(store: Store, target: LmtpStore, ring: IdKeyring, drop_id: int, agency_id: str,
                           notice_type: str, sender: str, rows: list[RowState],
                           originals: dict[int, dict[str, str]], retry_seconds: float = 0.0,
                           owner: str | None = None, clock: StageCpu | None = None) -> None:
    """``deliver.deliver_batch`` for an external store: claim, send, record (see above).
    ExternalStoreUnavailable if the LMTP server gave no answer for some notices within
    lmtp.retry_seconds (the outcomes it did give are recorded; run the drop again to resume)."""
    clock = clock or StageCpu()
    cpu = stagecpu.now()
    for attempt in range(3):
        try:
            sending, addresses = retrying(retry_seconds, _claim, store, drop_id, agency_id, notice_type, rows, owner)
            break
        except IntegrityError:
            # another writer recorded one of these keys meanwhile: claim again, now seeing it
            _undo_delivered(rows)
            if attempt == 2:
                raise
    cpu = clock.add("write", cpu)
    messages = [Outgoing(sender, (addresses[r.account_id],), r.raw) for r in sending]
    results = target.deliver_with_retry(messages)
    delivered, failed, unknown = [], [], []
    for r, message, replies in zip(sending, messages, results):
        reply = replies.get(message.recipients[0]) or Reply(451, "4.4.1 no reply")
        if reply.ok:
            r.status, r.stage, r.reason = DELIVERED, "deliver", None
            delivered.append(r)
        elif reply.unknown:
            unknown.append(r)
        else:
            r.stop(FAILED, "deliver", (reasons.EXTERNAL_REFUSED if reply.permanent
                                       else reasons.EXTERNAL_DEFERRED).format(reply=reply))
            failed.append(r)
    cpu = clock.add("write", cpu)
    retrying(retry_seconds, _record, store, ring, drop_id, (agency_id, notice_type), rows, originals, delivered, failed,
             unknown, owner)
    clock.add("commit", cpu)
    for r in rows:
        r.raw = r.analyzed = None
    if unknown:
        raise ExternalStoreUnavailable(
            f"the external mail store at {target.config.target} gave no answer for {len(unknown)} notice(s) "
            f"within {target.config.retry_seconds:g} s (lmtp.retry_seconds)")


def _claim(store: Store, drop_id: int, agency_id: str, notice_type: str, rows: list[RowState],
           owner: str | None) -> tuple[list[RowState], dict[int, str]]:
    """Step 1, one transaction: the rows to send (new keys recorded 'sending', and this drop's
    keys left 'sending' by a run that stopped), the others marked duplicate; and the mailboxes'
    addresses."""
    now = utcnow()
    if store.dialect == "sqlite":  # stored as SQLAlchemy's DateTime stores it there (UTC, no offset)
        now = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    with store.session() as s:
        locked_drop(s, drop_id, owner)
        ready = [r for r in rows if r.ready]
        states = notice_states(s, [(r.account_id, r.key) for r in ready])
        seen: set[tuple[int, str]] = set()
        new, again = [], []
        for r in ready:
            pair = (r.account_id, r.key)
            state = states.get(pair)
            if pair in seen or (state is not None and not (state[0] == SENDING and state[1] == drop_id)):
                # delivered already, or being sent by another drop (which sends it again if it stopped)
                r.stop(DUPLICATE, "deliver", reasons.DUPLICATE)
                r.raw = r.analyzed = None
                continue
            seen.add(pair)
            (again if state is not None else new).append(r)
        thread_into_applications(s, agency_id, new)
        _insert_rows(s, "notice", EXTERNAL_NOTICE_COLUMNS,
                     [(r.key, agency_id, notice_type, r.account_id, None, drop_id, now, SENDING) for r in new])
        accounts = sorted({r.account_id for r in new + again})
        addresses: dict[int, str] = {}
        for i in range(0, len(accounts), KEY_CHUNK):
            addresses.update(s.execute(select(Account.id, Account.address)
                                       .where(Account.id.in_(accounts[i:i + KEY_CHUNK]))).all())
    return [r for r in ready if r.status != DUPLICATE], addresses


def _record(store: Store, ring: IdKeyring, drop_id: int, kind: tuple[str, str], rows: list[RowState],
            originals: dict[int, dict[str, str]],
            delivered: list[RowState], failed: list[RowState], unknown: list[RowState], owner: str | None) -> None:
    """Step 3, one transaction: the notices' outcomes; then, unless some are unknown (the run
    stops, and its rerun sends those again), every row's state and the drop's counts. The
    outcomes are recorded even if the drop was taken over meanwhile (they are what the store
    said), its rows are not (they are the new owner's), and DropTakenOver follows."""
    t = Notice.__table__
    with store.session() as s:
        drop = s.get(Drop, drop_id, with_for_update=True)  # locked first, as in local mode
        taken = owner is not None and drop.owner != owner
        taken_by = drop.owner or "(another node, which has finished it)"
        if delivered:
            s.execute(update(t).where(t.c.account_id == bindparam("a"), t.c.idempotency_key == bindparam("k"),
                                      t.c.state == SENDING)
                      .values(state=None, delivered_at=bindparam("at")),
                      [{"a": r.account_id, "k": r.key, "at": utcnow()} for r in delivered],
                      execution_options={"synchronize_session": False})
            # counted once, here: a notice is 'sending' (not counted) until its 250 is recorded
            count_notices(s, Counter({(utcnow().date(), *kind): len(delivered)}))
        if failed:  # each in its account's partition (PostgreSQL)
            s.execute(delete(t).where(t.c.account_id == bindparam("a"), t.c.idempotency_key == bindparam("k"),
                                      t.c.state == SENDING),
                      [{"a": r.account_id, "k": r.key} for r in failed],
                      execution_options={"synchronize_session": False})
        if not unknown and not taken:
            record_rows(s, ring, drop, rows, originals, delivered)
    if taken:
        raise DropTakenOver(f"drop {drop_id} was taken over by node {taken_by} while this run was stalled past "
                            "its lease; this run stops (its last batch's outcomes are recorded)")

"""Stage `deliver`: one transaction per batch: the messages (through the one mail write path),
their Notice rows, the batch's count added to ``notice_count`` (what `stats` reads) and every
row's DropRow state, then ``MailStore.changed`` after the commit. The messages go through the
mail store (``store.mail.deliver_in``) in the batch's transaction.

Exactly once: a notice's idempotency key is unique per account in ``notice``. Keys already there (an earlier
drop, a rerun, a crash-and-rerun) or earlier in this batch make the row a duplicate; a concurrent
writer that commits the same key first makes our insert fail, and the batch is redone.
"""
from __future__ import annotations

from collections import Counter

from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError

from mailserver.errors import StorageError
from mailserver.identity.keys import IdKeyring
from mailserver.identity.rowseal import seal_row
from mailserver.store import Store, bodies
from mailserver.store.counters import count_notices
from mailserver.store.driver import driver_execute, driver_rows, on_sqlite, unnest_insert_sql, unnest_params
from mailserver.store.api import MailStore, NewMessage
from mailserver.store.models import Drop, DropRow, utcnow
from mailserver.store.models.delivery import ROW_COUNT_COLUMNS
from mailserver.store.outage import Backoff, is_outage

from .reasons import DUPLICATE as DUPLICATE_REASON
from .rowstate import DELIVERED, DUPLICATE, KEEP_DATA, RowState
from .applications import thread_into_applications
from . import stagecpu
from .stagecpu import StageCpu

KEY_CHUNK = 900


class DropTakenOver(StorageError):
    """The drop's lease passed while this node was stalled, and another node took it over: the
    batch is not written (rolled back), and this run stops."""


def notice_rows(session, pairs: list[tuple[int, str]], columns: tuple[str, ...] = (),
                where: str = "TRUE") -> list[tuple]:
    """(account id, key, *``columns``) of the notices of these (account id, key) pairs, the notice
    table aliased ``n`` in ``columns`` and ``where`` (a plain driver query: SQLAlchemy's coercion
    of a thousand bound values cost more than the index lookups). A key is unique per account
    (migration 0026)."""
    found: list[tuple] = []
    extra = "".join(f", {c}" for c in columns)
    sqlite = on_sqlite(session)
    for i in range(0, len(pairs), KEY_CHUNK):
        part = pairs[i:i + KEY_CHUNK]
        if not part:
            continue
        if sqlite:  # one table: the unique index (key, account) finds each key
            query = (f"SELECT n.account_id, n.idempotency_key{extra} FROM notice n "
                     f"WHERE n.idempotency_key IN ({', '.join('?' * len(part))}) AND {where}")
            wanted = set(part)
            found += [tuple(p) for p in driver_rows(session, query, *(k for _, k in part)) if (p[0], p[1]) in wanted]
        else:  # partitioned by account: each pair looked up in its account's partition only. LATERAL
            # with LIMIT 1 (not flattened into a join) keeps a nested loop of index probes pruned at
            # run time: a plain join chose to hash every partition's rows (188 ms a batch at 500,000
            # notices, against 6 ms; docs/benchmarks.md)
            outer = "".join(f", n.{c.removeprefix('n.')}" for c in columns)
            query = (f"SELECT k.account_id, k.idempotency_key{outer} FROM unnest(?::bigint[], ?::varchar[]) "
                     f"AS k(account_id, idempotency_key) CROSS JOIN LATERAL (SELECT 1 AS found{extra} FROM notice n "
                     "WHERE n.account_id = k.account_id AND n.idempotency_key = k.idempotency_key "
                     f"AND {where} LIMIT 1) n")
            found += [tuple(p) for p in driver_rows(session, query, [a for a, _ in part], [k for _, k in part])]
    return found


def known_keys(session, pairs: list[tuple[int, str]], delivered_only: bool = False) -> set[tuple[int, str]]:
    """The (account id, key) pairs already delivered. ``delivered_only``: not the keys still being
    sent to an external mail store (notice.state 'sending', delivery/external.py)."""
    return set(notice_rows(session, pairs, where="n.state IS NULL" if delivered_only else "TRUE"))


def mark_duplicates(session, rows: list[RowState]) -> list[RowState]:
    """The rows still to deliver; the others marked duplicate."""
    ready = [r for r in rows if r.ready]
    existing = known_keys(session, [(r.account_id, r.key) for r in ready])
    seen: set[tuple[int, str]] = set()
    out = []
    for r in ready:
        pair = (r.account_id, r.key)
        if pair in existing or pair in seen:
            r.stop(DUPLICATE, "deliver", DUPLICATE_REASON)
            r.raw = r.analyzed = None
        else:
            seen.add(pair)
            out.append(r)
    return out


def deliver_batch(store: Store, ring: IdKeyring, drop_id: int, agency_id: str, notice_type: str,
                  rows: list[RowState], originals: dict[int, dict[str, str]], retry_seconds: float = 0.0,
                  owner: str | None = None, clock: StageCpu | None = None, mail: MailStore | None = None) -> None:
    """Write one batch. ``originals``: row number -> the row's cells (sealed for rows kept).
    ``mail``: the mail store the messages go through and whose sessions are told (default
    ``store.mail``); the batch's transaction is ``store``'s, which may be a second connection
    pool on the same database (the SQLite writer's own page cache), whose hub nobody listens to.
    ``owner``: the node running the drop; the batch is written only while the drop is still its
    (DropTakenOver otherwise). ``clock``: the CPU of writing and of committing is added to it.
    A failure for a database outage is retried with backoff for ``retry_seconds``, then raises
    StoreUnavailable (the transaction rolled back: nothing of the batch is stored)."""
    conflicts, backoff = 0, Backoff(retry_seconds)
    mail = mail or store.mail
    while True:
        try:
            folder_ids = _write(store, mail, ring, drop_id, agency_id, notice_type, rows, originals, owner,
                                clock or StageCpu())
            break
        except IntegrityError:
            # Another writer delivered one of these keys meanwhile: redo, now seeing it as duplicate.
            _undo_delivered(rows)
            conflicts += 1
            if conflicts == 3:
                raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            _undo_delivered(rows)  # rolled back: nothing was delivered
            backoff.wait(exc)
    mail.changed(folder_ids)


def _undo_delivered(rows: list[RowState]) -> None:
    for r in rows:
        if r.status == DELIVERED:
            r.status, r.stage, r.reason = "received", None, None


NOTICE_COLUMNS = ("idempotency_key", "agency_id", "notice_type_id", "account_id", "message_id", "drop_id",
                  "delivered_at")
DROP_ROW_COLUMNS = ("drop_id", "line", "status", "reason", "idempotency_key", "stage", "data")


def _insert_rows(session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """executemany straight through the driver (PostgreSQL: one statement of unnested arrays):
    the pipeline's own rows are the bulk of its writes, and SQLAlchemy's per-row parameter
    processing cost more than the insert itself. A duplicate key raises IntegrityError either way."""
    if not rows:
        return
    if on_sqlite(session):
        driver_execute(session, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                       rows)
    else:
        driver_execute(session, unnest_insert_sql(table, columns), [unnest_params(rows)])


def _sealed(ring: IdKeyring, r: RowState, originals: dict[int, dict[str, str]]) -> bytes | None:
    """The row's original cells, sealed, for rows kept for the report and `drop retry`."""
    return seal_row(ring, originals[r.line]) if r.status in KEEP_DATA and r.line in originals else None


def _write(store, mail, ring, drop_id, agency_id, notice_type, rows, originals, owner, clock: StageCpu) -> set[int]:
    cpu = stagecpu.now()
    # The bodies into the blob store before the transaction (a row found a duplicate inside it
    # leaves an orphan blob, which the collector removes): the write lock is not held meanwhile.
    news = [NewMessage(account_id=r.account_id, raw=r.raw, analyzed=r.analyzed) for r in rows if r.ready]
    bodies.stage(store, news)
    staged = {id(m.raw): m for m in news}
    cpu = clock.add("blobs", cpu)
    now = utcnow()
    day = now.date()
    if store.dialect == "sqlite":  # stored as SQLAlchemy's DateTime stores it there (UTC, no offset)
        now = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    with store.session() as s:
        drop = locked_drop(s, drop_id, owner)  # first, locked until the commit
        todo = mark_duplicates(s, rows)
        thread_into_applications(s, agency_id, todo)
        delivered = mail.deliver_in(s, [staged.get(id(r.raw)) or NewMessage(account_id=r.account_id, raw=r.raw,
                                                                            analyzed=r.analyzed) for r in todo])
        notices = [(r.key, agency_id, notice_type, r.account_id, d.message_id, drop_id, now)
                   for r, d in zip(todo, delivered)]
        _insert_rows(s, "notice", NOTICE_COLUMNS, notices)
        for r in todo:
            r.status, r.stage, r.reason = DELIVERED, "deliver", None
        record_rows(s, ring, drop, rows, originals, todo)
        # last: the counter row (shared by every drop of this agency and type today) stays locked
        # only from here to the commit
        count_notices(s, Counter({(day, agency_id, notice_type): len(notices)}))
        cpu = clock.add("write", cpu)
    clock.add("commit", cpu)
    for r in todo:
        r.raw = r.analyzed = None
    return {d.folder_id for d in delivered}


def locked_drop(s, drop_id: int, owner: str | None) -> Drop:
    """The drop's row, locked until the commit (SQLite: the write lock, taken at BEGIN): a node
    taking the drop over waits for this batch, and a batch after the takeover sees it.
    DropTakenOver if it is no longer ``owner``'s."""
    drop = s.get(Drop, drop_id, with_for_update=True)
    if owner is not None and drop.owner != owner:
        raise DropTakenOver(f"drop {drop_id} was taken over by node {drop.owner} while this run was stalled "
                            "past its lease; this run stops (nothing is delivered twice)")
    return drop


def record_rows(s, ring: IdKeyring, drop: Drop, rows: list[RowState], originals: dict[int, dict[str, str]],
                todo: list[RowState]) -> None:
    """Every row's state (new rows inserted, retried rows updated) and the drop's counts;
    ``todo``: the rows delivered by this batch."""
    drop_id = drop.id
    _insert_rows(s, "drop_row", DROP_ROW_COLUMNS, [
        (drop_id, r.line, r.status, r.reason, r.key, r.stage, _sealed(ring, r, originals))
        for r in rows if r.row_id is None])
    again = [{"drop_id": drop_id, "line": r.line, "status": r.status, "reason": r.reason,
              "idempotency_key": r.key, "stage": r.stage, "data": _sealed(ring, r, originals),
              "row_id": r.row_id}
             for r in rows if r.row_id is not None]
    if again:
        t = DropRow.__table__
        s.execute(update(t).where(t.c.id == bindparam("b_id")).values(
            status=bindparam("b_status"), reason=bindparam("b_reason"), stage=bindparam("b_stage"),
            data=bindparam("b_data"), idempotency_key=bindparam("b_key")),
            [{"b_id": rec["row_id"], "b_status": rec["status"], "b_reason": rec["reason"],
              "b_stage": rec["stage"], "b_data": rec["data"], "b_key": rec["idempotency_key"]}
             for rec in again],
            execution_options={"synchronize_session": False})
    new_rows = [r for r in rows if r.row_id is None]
    drop.rows_total += len(new_rows)
    drop.rows_delivered += len(todo)
    drop.rows_rejected += sum(1 for r in new_rows if r.status != DELIVERED)
    # A retried row was counted as rejected when it was first seen.
    drop.rows_rejected -= sum(1 for r in todo if r.row_id is not None)
    by_status = Counter(r.status for r in rows)
    by_status.subtract(r.previous for r in rows if r.row_id is not None and r.previous)  # a retried row moves
    for status, n in by_status.items():
        column = ROW_COUNT_COLUMNS.get(status)
        if n and column and status != DELIVERED:  # delivered rows: rows_delivered, above
            setattr(drop, column, getattr(drop, column) + n)

"""Running a drop: file-level checks, then chunks of rows through the workers, one writer.

A drop whose earlier run did not finish (a crash, SIGKILL, a failed batch) is resumed when the
same file is run again: its rows already recorded are skipped, and the idempotency keys make
sure nothing is delivered twice even if they were not. A running drop belongs to the node running
it (``drop.owner``) for a lease it renews while it runs (``delivery.lease_seconds``): another node
running the same file meanwhile is refused (``DropBusy``); once the lease passed unrenewed (the
node died) the next run of the file takes the drop over and resumes it, and the old owner, if it
was only stalled, finds its next batch refused (``DropTakenOver``) and stops. A drop that finished is refused when its
file (same SHA-256, agency and notice type) comes again, unless ``force`` (then every row it
delivered reports as a duplicate).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import func, select, update

from mailserver.config import Config
from mailserver.errors import Conflict, NotFound, StoreUnavailable
from mailserver.identity.rowseal import unseal_row
from mailserver.registry import Registry
from mailserver.store import leases
from mailserver.store.blobs import LocalBlobs
from mailserver.store.external import open_external
from mailserver.store.leases import Heartbeat
from mailserver.store.models import (Account, Agency, AgencyGrant, AgencySender, ApplicationDesk, Drop, DropRow,
                                     as_utc, utcnow)
from mailserver.store.outage import describe, is_outage, retrying

from . import read as read_mod
from . import reasons, stagecpu
from .catalog import get_definition, load_agencies, load_catalog
from .deliver import DropTakenOver, deliver_batch, mark_duplicates
from .external import deliver_batch_external
from .pipeline import (RowContext, RunSpec, fewer_collections, init_worker, paper_letters, process_chunk,
                       process_rows, small_cache_store, unpack)
from .read import AlreadyRun, FileError
from .render import AgencyInfo
from .report import ReportWriter, Summary, report_rows, write_stored_paper, write_stored_report
from .rowstate import RETRYABLE, RowState
from .stagecpu import StageCpu
from .validate import column_mapping

log = logging.getLogger("civicmail.delivery")
#: files smaller than this run in-process: starting worker processes costs more than it saves
POOL_THRESHOLD_BYTES = 256 * 1024
#: rows per chunk sent to a worker process (a delivery transaction takes delivery.batch_size rows).
#: A chunk's result is pickled whole (about 8.5 KB a row): at 500 rows its 4 MB buffer was new
#: memory every time (a page fault per 4 KB, on both sides), and pickling cost three times as much
#: per row as at 200 (bench pipeline's "other")
POOL_CHUNK_ROWS = 200
#: chunks in flight per worker: one being worked on, one waiting, so a worker never idles while
#: its result is collected (results are taken in row order: a resumed drop skips a prefix)
CHUNKS_PER_WORKER = 2
#: the writer connection's SQLite page cache: bounded (it does not grow with the drop), and large
#: enough for a batch's dirty pages (about 11 MiB: a page per content row, the index pages its
#: inserts touch) and the random unique indexes between batches. At 2 MiB a batch spilled pages to
#: the WAL before its commit and read them back (a 50,000-row drop: 1.3 times the write calls and
#: 2.5 times the read calls; docs/benchmarks.md)
WRITER_CACHE_KIB = 32 * 1024
#: the same for the blob store's pack index (keyed by the random blob key), on the writer's thread
BLOB_INDEX_CACHE_KIB = 16 * 1024
#: batches handed to the writer thread and not yet written (bounded: memory stays flat)
WRITES_QUEUED = 1


class DropBusy(Conflict):
    """The file's drop is running on another node whose lease is alive: it is not resumed here."""


@dataclass
class DropResult:
    drop_id: int | None
    summary: Summary
    report_path: Path | None
    paper_path: Path | None
    resumed: bool = False


def agency_info(reg: Registry, agency_id: str, notice_type: str) -> AgencyInfo:
    """The agency as notices show it; NotFound unless it exists, is enabled and holds the grant."""
    contacts = load_agencies(reg.config.templates_dir).get(agency_id, {})
    with reg.store.reader() as s:
        agency = s.get(Agency, agency_id)
        if agency is None or not agency.enabled:
            raise NotFound(f"no enabled agency {agency_id!r}")
        name = agency.name
        if s.get(AgencyGrant, (agency_id, notice_type)) is None:
            raise NotFound(f"agency {agency_id} is not granted notice type {notice_type}")
        # Its first sender is its mailbox; otherwise the first sender address.
        sender = s.scalar(select(Account.address).where(Account.agency_id == agency_id).order_by(Account.id)) or \
            s.scalar(select(func.min(AgencySender.address)).where(AgencySender.agency_id == agency_id))
        desk = s.scalar(select(Account.address).join(ApplicationDesk, ApplicationDesk.account_id == Account.id)
                        .where(ApplicationDesk.agency_id == agency_id))
    return AgencyInfo(id=agency_id, name=name, sender=sender, apply_address=desk or "",
                      **{k: str(contacts[k]) for k in ("phone", "address", "hours", "website") if k in contacts})


def drops_dir(config: Config, drop_id: int) -> Path:
    return config.data_path("drops") / str(drop_id)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while True:
        chunk = list(islice(items, size))
        if not chunk:
            return
        yield chunk


def _workers(config: Config, path: Path) -> int:
    n = config.delivery.workers or os.cpu_count() or 1
    return n if n > 1 and path.stat().st_size >= POOL_THRESHOLD_BYTES else 1


def run_drop(reg: Registry, path: Path, agency_id: str, notice_type: str, *, dry_run: bool = False,
             encoding: str | None = None, force: bool = False, source: str = "cli",
             report_path: Path | None = None, paper_path: Path | None = None,
             progress: Callable[[int], None] = lambda n: None) -> DropResult:
    """Run one drop file. FileError for a file-level problem (nothing is delivered then)."""
    config, store = reg.config, reg.store
    catalog = load_catalog(config.templates_dir)
    try:
        definition = get_definition(catalog, notice_type)
    except NotFound as exc:
        raise FileError(str(exc)) from None
    agency = agency_info(reg, agency_id, notice_type)
    drop_file = read_mod.open_drop(path, encoding, config.delivery)
    mapping = column_mapping(definition, drop_file.columns)
    stream = read_mod.rows(drop_file)
    first = next(stream, None)
    if first is None:
        raise FileError(reasons.NO_ROWS)
    sha = read_mod.file_sha256(path)

    drop_id, skip_through, resumed = None, 0, False
    if not dry_run:
        drop_id, skip_through, resumed = retrying(config.delivery.store_retry_seconds, _start_drop, reg, path, sha,
                                                  agency_id, notice_type, force, source, drop_file.columns)
        out = drops_dir(config, drop_id)
        report_path = report_path or out / "report.csv"
        paper_path = paper_path or out / "paper.csv"
    # A dry run's files as it goes; a real run's from the store when it ends (write_outputs).
    writer = ReportWriter(report_path, paper_path, drop_file.columns) if dry_run else None
    summary = Summary()
    spec = RunSpec(config, notice_type, agency, mapping)
    started = time.monotonic()

    def all_rows():
        yield first
        yield from stream

    pending = ((line, cells) for line, cells in all_rows() if line > skip_through)
    batch = max(100, config.delivery.batch_size)
    chunk = min(batch, POOL_CHUNK_ROWS) if _workers(config, path) > 1 else batch

    # CPU per stage: the writer thread's clock and the workers' figures are kept apart (added to
    # the summary's at the end, with what no stage claimed in this process and in the workers)
    clock, writer_clock, worker_clock = summary.cpu, StageCpu(), StageCpu()
    cpu_started = stagecpu.process_tree_cpu()

    def write(rows: list[RowState], originals: dict[int, dict[str, str]]) -> tuple[list, dict]:
        """The one writer: one transaction per batch."""
        if dry_run:
            t = stagecpu.now()
            with store.reader() as s:
                mark_duplicates(s, rows)
            for r in rows:
                if r.ready:
                    r.status, r.stage = "delivered", "deliver"
            writer_clock.add("write", t)
        elif external is not None:
            deliver_batch_external(writer_store, external, reg.keyring, drop_id, agency_id, notice_type,
                                   agency.sender or "", rows, originals,
                                   retry_seconds=config.delivery.store_retry_seconds, owner=store.node,
                                   clock=writer_clock)
        else:
            deliver_batch(writer_store, reg.keyring, drop_id, agency_id, notice_type, rows, originals,
                          retry_seconds=config.delivery.store_retry_seconds, owner=store.node, clock=writer_clock,
                          mail=store.mail)  # this process's sessions hear of it (serve's drops)
        return rows, originals

    def written(rows: list[RowState], originals: dict[int, dict[str, str]]) -> None:
        """A batch is committed: its report lines, in the main thread (the writer thread is the
        pipeline's narrowest part, so it does nothing else)."""
        t = stagecpu.now()
        summary.add(rows)
        if writer is not None:
            writer.write(rows, originals)
        progress(len(rows))
        clock.add("report", t)

    # The writer's own connection, with a page cache that does not grow with the drop: a batch's
    # pages are written to the WAL at commit (SQLite spills early if a batch outgrows it), and
    # copied into the database every delivery.writer_wal_pages. The pages of the random unique indexes
    # (the idempotency key, the blob key) are rewritten by every batch: checkpointed every few batches
    # (SQLite's default, 1000 pages, is about one), each is copied once for several commits. The WAL
    # restarts after a checkpoint no reader's older snapshot holds back: it stays near the key plus a batch.
    wal_pages = config.delivery.writer_wal_pages
    writer_store = (small_cache_store(config, WRITER_CACHE_KIB, wal_pages)
                    if store.dialect == "sqlite" else store)
    if writer_store is not store and isinstance(writer_store.blobs, LocalBlobs):
        writer_store.blobs.index_cache_kib = BLOB_INDEX_CACHE_KIB
        writer_store.blobs.index_checkpoint_pages = wal_pages
    # external mode: the LMTP connections to the city's mail store, for this run
    external = None if dry_run else open_external(config)
    lease = config.delivery.lease_seconds
    heartbeat, beating = contextlib.ExitStack(), None  # the drop's lease, renewed while it runs

    def beat() -> None:
        """Start the heartbeat once the first batch is back: by then the worker processes are
        forked (all at once: ProcessPoolExecutor with fork), and a fork must not copy a thread
        that might hold a lock (_start_method). The lease taken at the start covers the wait."""
        nonlocal beating
        if drop_id is not None and beating is None:
            beating = heartbeat.enter_context(Heartbeat(lambda: _renew_drop(reg, drop_id, lease), lease,
                                                        f"drop {drop_id}"))

    try:
        # The writer runs in its own thread, up to WRITES_QUEUED batches behind: while a commit
        # waits for the disk, the workers go on rendering (and the writer never waits for them
        # while batches are ready).
        with ThreadPoolExecutor(1, thread_name_prefix="drop-writer") as writing, fewer_collections():
            in_write: deque = deque()
            chunks = _timed(_chunks(pending, chunk), clock, "read")
            for rows, originals in _batches(_process(spec, reg, path, chunks, clock, worker_clock), batch):
                beat()
                while len(in_write) >= WRITES_QUEUED or (in_write and in_write[0].done()):
                    written(*in_write.popleft().result())
                in_write.append(writing.submit(write, rows, originals))
            while in_write:
                written(*in_write.popleft().result())
        if writer_store is not store:
            t = stagecpu.now()
            _settle_wal(writer_store)
            clock.add("commit", t)
        beat()
        clock.merge(writer_clock)
        t = stagecpu.now()
        if drop_id is not None:
            # Before the drop is done: a run killed while writing them is resumed, and writes them.
            letters = write_outputs(reg, drop_id, spec, read_mod.rows(drop_file), report_path, paper_path)
        else:
            writer.close()
            letters = writer.paper_rows
        clock.add("report", t)
        clock.add_rest(cpu_started, worker_clock)
    except BaseException as exc:
        heartbeat.close()
        if writer is not None:
            writer.close(failed=exc)
        if writer_store is not store:
            writer_store.dispose()
        if external is not None:
            external.close()
        if isinstance(exc, DropTakenOver):
            raise  # the drop is another node's now: its state is that node's to record
        if drop_id is not None and (taker := _taken_over(reg, drop_id, beating)):
            # stalled past the lease (SIGSTOP, a frozen VM), then failed on waking: say so, not "outage"
            raise DropTakenOver(f"drop {drop_id} was taken over by node {taker} while this run was stalled "
                                f"past its lease; this run stops (nothing is delivered twice): {describe(exc)}") from exc
        if drop_id is not None:
            try:
                _finish_drop(reg, drop_id, "failed", f"{exc.__class__.__name__}: the run stopped; run again to resume")
            except Exception as also:  # the database is gone: the drop stays "running", which resumes too
                if not is_outage(also):
                    raise
        if is_outage(exc):
            raise _stopped(drop_id, summary, exc) from None
        raise
    heartbeat.close()
    if writer_store is not store:
        writer_store.dispose()
    if external is not None:
        external.close()
    summary.elapsed = time.monotonic() - started
    if drop_id is not None:
        try:
            retrying(config.delivery.store_retry_seconds, _finish_drop, reg, drop_id, "done", None)
        except StoreUnavailable as exc:  # every row is in; the rerun only records the end
            raise _stopped(drop_id, summary, exc) from None
    return DropResult(drop_id, summary, report_path, paper_path if letters else None, resumed)


def _settle_wal(writer_store) -> None:
    """The drop writer's WALs (the database's, the blob store's pack index) copied into their files
    by the drop itself: up to delivery.writer_wal_pages of them would otherwise wait for the next
    commit of any writer on the node (an SMTP delivery in `serve`), which would copy them."""
    conn = writer_store.engine.raw_connection()  # the driver's, outside any transaction
    try:
        conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()
    if isinstance(writer_store.blobs, LocalBlobs):
        writer_store.blobs.checkpoint()


def _stopped(drop_id: int | None, summary: Summary, exc: BaseException) -> StoreUnavailable:
    """The one line a run stopped by an outage ends with."""
    return StoreUnavailable(f"drop {drop_id} stopped after {summary.rows:,} rows: {describe(exc)}; run the same "
                            "command again to resume it (nothing is delivered twice)")


def write_outputs(reg: Registry, drop_id: int, spec: RunSpec, file_rows: Iterator[tuple[int, dict[str, str]]],
                  report_path: Path | None, paper_path: Path | None) -> int:
    """The report and the paper-mail export of a drop, from the store, each replaced whole: a
    resumed run's files too (nothing is appended), so every row is in them once, as the store has
    it. ``file_rows`` (the drop file read again) give the columns of delivered rows. A path that
    is None is not written. Returns the number of letters."""
    with contextlib.closing(file_rows):
        if report_path is not None:
            write_stored_report(reg.store, reg.keyring, drop_id, report_path, file_rows=file_rows)
    if paper_path is None:
        return 0
    ctx = RowContext(spec, reg.store)
    return write_stored_paper(reg.store, reg.keyring, drop_id, paper_path, lambda rows: paper_letters(ctx, rows))


def _batches(chunks: Iterator[tuple[list, dict]], size: int) -> Iterator[tuple[list, dict]]:
    """Finished chunks joined into write batches of about ``size`` rows (one transaction each)."""
    rows: list = []
    originals: dict = {}
    for chunk_rows, chunk_originals in chunks:
        rows.extend(chunk_rows)
        originals.update(chunk_originals)
        if len(rows) >= size:
            yield rows, originals
            rows, originals = [], {}
    if rows:
        yield rows, originals


def _timed(items: Iterator, clock: StageCpu, stage: str) -> Iterator:
    """``items``, the CPU each one took to make charged to ``stage``."""
    while True:
        t = stagecpu.now()
        item = next(items, None)
        clock.add(stage, t)
        if item is None:
            return
        yield item


def _process(spec: RunSpec, reg: Registry, path: Path, chunks: Iterator[list], clock: StageCpu,
             worker_clock: StageCpu):
    """(finished rows, their original cells) per chunk, in order. Worker processes for large
    files, at most one chunk per worker (plus one) in flight so that memory stays flat. The
    stages' CPU is added to ``clock`` (this process's) and ``worker_clock`` (as workers report it)."""
    workers = _workers(reg.config, path)
    if workers == 1:
        ctx = RowContext(spec, reg.store)
        for chunk in chunks:
            originals = {line: cells for line, cells in chunk}
            yield process_rows(ctx, [RowState(line, cells) for line, cells in chunk], clock), originals
        return
    method = _start_method()
    if method == "fork":
        # gc.freeze: the collector never writes to the inherited objects' headers, so their pages
        # stay shared instead of being copied into every worker.
        gc.freeze()
    with ProcessPoolExecutor(workers, mp_context=get_context(method), initializer=init_worker,
                             initargs=(spec, os.getpid())) as pool:
        in_flight: deque = deque()

        def finished() -> tuple[list[RowState], dict]:
            future, originals = in_flight.popleft()
            packed, seconds = future.result()
            worker_clock.merge(seconds)
            t = stagecpu.now()
            rows = [unpack(p) for p in packed]
            clock.add("transfer", t)
            return rows, originals

        for chunk in chunks:
            in_flight.append((pool.submit(process_chunk, chunk), {line: cells for line, cells in chunk}))
            if len(in_flight) > CHUNKS_PER_WORKER * workers:
                yield finished()
        while in_flight:
            yield finished()
    if method == "fork":
        gc.unfreeze()


def _start_method() -> str:
    """Fork when this process runs one thread (``civicmail drop run``): the workers then share
    the parent's pages of code and modules and start in milliseconds; each opens its own store
    connection (RowContext.store). A process with other threads (``civicmail serve`` running a
    spooled drop) spawns fresh workers instead: a fork copies only the calling thread, and a
    lock another thread held at that moment would stay locked in the child."""
    return "fork" if threading.active_count() == 1 else "spawn"


def _start_drop(reg: Registry, path: Path, sha: str, agency_id: str, notice_type: str, force: bool, source: str,
                columns: list[str]) -> tuple[int, int, bool]:
    """Claim the file's drop for this node: a new one, or the earlier run of the same file resumed
    (taken over, if another node held it and its lease passed). DropBusy while another node's
    lease on it is alive."""
    me, now = reg.store.node, utcnow()
    until = now + dt.timedelta(seconds=reg.config.delivery.lease_seconds)
    with reg.store.session() as s:
        # One start at a time per agency and notice type: the grant's row is locked (SQLite's
        # write lock is taken at BEGIN), so two nodes never both create, or both take over, a drop.
        s.execute(select(AgencyGrant.agency_id).where(AgencyGrant.agency_id == agency_id,
                                                      AgencyGrant.notice_type_id == notice_type).with_for_update())
        previous = s.scalars(select(Drop).where(Drop.sha256 == sha, Drop.agency_id == agency_id,
                                                Drop.notice_type_id == notice_type).order_by(Drop.id.desc())).first()
        if previous is not None and previous.state == "running" and s.scalars(
                select(Drop).where(Drop.id == previous.id).with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)).first() is None:
            # PostgreSQL: its row is locked by a batch being written (deliver._write): its owner
            # is at work, or stalled inside a transaction the server ends after store.statement_timeout.
            # (Once locked here, its owner and lease are read again: a renewal may just have come.)
            raise DropBusy(f"drop {previous.id} of this file is running on node {previous.owner} (it is writing a "
                           "batch): not resumed here while that node is alive")
        if (previous is not None and previous.state == "running" and previous.owner not in (None, me)
                and previous.lease_until is not None and as_utc(previous.lease_until) > now
                and not leases.gone(previous.owner)):
            raise DropBusy(f"drop {previous.id} of this file is running on node {previous.owner} (lease until "
                           f"{as_utc(previous.lease_until):%Y-%m-%d %H:%M:%S}Z, renewed while it runs): not resumed "
                           "here while that node is alive")
        if previous is not None and not force:
            if previous.state == "done":
                raise AlreadyRun(reasons.ALREADY_RUN.format(drop_id=previous.id, delivered=previous.rows_delivered))
            last = s.scalar(select(func.max(DropRow.line)).where(DropRow.drop_id == previous.id)) or 0
            if previous.state == "running" and previous.owner not in (None, me):
                log.warning("drop %d: taken over from node %s (its lease passed, or its process ended)",
                            previous.id, previous.owner)
            previous.state, previous.error, previous.finished_at = "running", None, None
            previous.owner, previous.lease_until = me, until
            return previous.id, last, True
        drop = Drop(agency_id=agency_id, notice_type_id=notice_type, filename=path.name, sha256=sha, state="running",
                    source=source, columns=json.dumps(columns, ensure_ascii=False), owner=me, lease_until=until)
        s.add(drop)
        s.flush()
        return drop.id, 0, False


def _renew_drop(reg: Registry, drop_id: int, seconds: float) -> bool:
    """The heartbeat of a running drop: False once another node took it over."""
    with reg.store.session() as s:
        return s.execute(update(Drop).where(Drop.id == drop_id, Drop.owner == reg.store.node,
                                            Drop.state == "running")
                         .values(lease_until=utcnow() + dt.timedelta(seconds=seconds))).rowcount == 1


def _taken_over(reg: Registry, drop_id: int, beating: Heartbeat | None) -> str | None:
    """The node that took this run's drop over, if one did (the heartbeat saw the lease go, or the
    store names another owner); None while the drop is still this node's or the store is away."""
    try:
        with reg.store.reader() as s:
            owner = s.scalar(select(Drop.owner).where(Drop.id == drop_id))
    except Exception:  # the database away: only the heartbeat can tell
        return "(unknown: the store does not answer)" if beating is not None and beating.lost.is_set() else None
    if owner == reg.store.node:
        return None
    return owner or "(another node, which has finished it)"


def _finish_drop(reg: Registry, drop_id: int, state: str, error: str | None) -> None:
    """Record the end of this node's run (nothing, if another node took the drop over meanwhile)."""
    with reg.store.session() as s:
        s.execute(update(Drop).where(Drop.id == drop_id, Drop.owner == reg.store.node).values(
            state=state, error=error, finished_at=utcnow(), owner=None, lease_until=None))


def retry_drop(reg: Registry, drop_id: int) -> Summary:
    """Run the held, failed and unmatched rows of a drop again (after the registry was fixed)."""
    ring = reg.keyring
    with reg.store.reader() as s:
        drop = s.get(Drop, drop_id)
        if drop is None:
            raise NotFound(f"no drop {drop_id}")
        columns = json.loads(drop.columns or "[]")
        agency_id, notice_type = drop.agency_id, drop.notice_type_id
        stored = s.execute(select(DropRow.id, DropRow.line, DropRow.data, DropRow.status).where(
            DropRow.drop_id == drop_id, DropRow.status.in_(RETRYABLE), DropRow.data.is_not(None))
            .order_by(DropRow.line)).all()
    definition = get_definition(load_catalog(reg.config.templates_dir), notice_type)
    spec = RunSpec(reg.config, notice_type, agency_info(reg, agency_id, notice_type),
                   column_mapping(definition, columns))
    ctx = RowContext(spec, reg.store)
    summary = Summary()
    started = time.monotonic()
    with contextlib.ExitStack() as closing:
        external = open_external(reg.config)
        if external is not None:
            closing.enter_context(external)
        for i in range(0, len(stored), reg.config.delivery.batch_size):
            part = stored[i:i + reg.config.delivery.batch_size]
            originals = {line: unseal_row(ring, data) for _, line, data, _ in part}
            rows = [RowState(line, originals[line], row_id=row_id, previous=status)
                    for row_id, line, _, status in part]
            process_rows(ctx, rows)
            if external is not None:
                deliver_batch_external(reg.store, external, ring, drop_id, agency_id, notice_type,
                                       spec.agency.sender or "", rows, originals)
            else:
                deliver_batch(reg.store, ring, drop_id, agency_id, notice_type, rows, originals)
            summary.add(rows)
    out = drops_dir(reg.config, drop_id)
    report, paper = (path if path.exists() else None for path in (out / "report.csv", out / "paper.csv"))
    # The run's files at their usual place, as the store now has them (the letters owed are
    # fewer), each that is there (a run given --report elsewhere still has its paper.csv here);
    # the old report gives the columns of delivered rows, as the drop file did (a generator: read
    # only if there is a report).
    write_outputs(reg, drop_id, spec, report_rows(out / "report.csv", columns), report, paper)
    # `drop status` tells when the drop's rows and files were last settled: this retry, not the
    # first run. Its state stays as it was (a run that stopped is still resumed by running it again).
    with reg.store.session() as s:
        drop = s.get(Drop, drop_id)
        if drop.state != "running":
            drop.finished_at = utcnow()
    summary.elapsed = time.monotonic() - started
    return summary

"""The pipeline: an ordered tuple of stage names, and the one loop that runs a chunk of rows
through the row stages.

``read`` feeds chunks; ``validate`` .. ``sign`` run in worker processes (``RowContext`` is what
each worker builds once); ``deliver`` and ``report`` run in the one writer (``runner``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import threading
import time
from dataclasses import dataclass
from email.utils import format_datetime
from functools import cached_property

from mailserver.config import Config
from mailserver.mime import Analyzed
from mailserver.mime.sortkeys import SortFields
from mailserver.store import Store
from mailserver.store.outage import retrying

from . import compose as compose_mod
from . import reasons, stagecpu
from . import validate as validate_mod
from .applications import NUMBER_FIELD
from .catalog import NoticeDefinition, load_catalog
from .consent import consent
from .deliver import known_keys
from .reasons import DUPLICATE as DUPLICATE_REASON
from .match import match
from .render import AgencyInfo, RenderError, Renderer
from .rowkeys import idempotency_key
from .rowstate import DUPLICATE, FAILED, INVALID, RECEIVED, UNMATCHED, RowState
from .sign import SmimeSigner, authentication_results, sign as sign_raw
from .stagecpu import StageCpu
from .structure import NoticeStructure

PIPELINE = ("read", "validate", "match", "consent", "render", "compose", "sign", "deliver", "report")
#: the stages that run per chunk in a worker, in order (``structure``: the stored structure of
#: what ``sign`` made, part of the sign stage as rows see it, timed on its own)
ROW_STAGES = ("validate", "match", "consent", "render", "compose", "sign", "structure")
WORKER_CACHE_KIB = 4096
#: how often a worker checks that the drop's process is still there
PARENT_POLL_SECONDS = 0.5
#: the collector's first threshold while rows are processed: every row allocates dozens of
#: containers, and at Python's 700 the collector ran every few rows and walked each chunk's
#: live rows again and again (about 20 us a row; 7 at this threshold). Rows make little cyclic
#: garbage, so memory stays flat.
GC_THRESHOLD = 20_000


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to process rows of one drop (picklable: sent to spawned workers)."""

    config: Config
    notice_type: str
    agency: AgencyInfo
    #: field name -> the file's column name
    mapping: dict[str, str]


def small_cache_store(config: Config, cache_kib: int, checkpoint_pages: int | None = None) -> Store:
    """A store of its own whose SQLite connections keep a page cache of ``cache_kib`` (the
    store's default, 64 MiB per connection, is sized for a server's many readers).
    ``checkpoint_pages``: the connections' ``wal_autocheckpoint`` (SQLite's default: 1000)."""
    from sqlalchemy import event

    from mailserver.store import open_store

    store = open_store(config)
    if store.dialect == "sqlite":
        @event.listens_for(store.engine, "connect")
        def _small_cache(dbapi_conn, _record):
            dbapi_conn.execute(f"PRAGMA cache_size=-{cache_kib}")
            if checkpoint_pages is not None:
                dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")
    return store


class RowContext:
    """Per process: the definition, compiled templates, skeleton, keys and a store to read."""

    def __init__(self, spec: RunSpec, store: Store | None = None) -> None:
        self.spec = spec
        self.config = spec.config
        self.definition: NoticeDefinition = load_catalog(spec.config.templates_dir)[spec.notice_type]
        self._store = store

    @cached_property
    def store(self) -> Store:
        if self._store is not None:
            return self._store
        # A worker only looks rows up: a small page cache keeps its memory flat.
        return small_cache_store(self.config, WORKER_CACHE_KIB)

    @cached_property
    def keyring(self):
        from mailserver.identity.keys import IdKeyring

        return IdKeyring.load(self.config.data_path(self.config.keys.dir))

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.config.templates_dir, self.definition, self.spec.agency, self.config.city.name,
                        self.config.city.domain.lower())

    @cached_property
    def skeleton(self) -> compose_mod.Skeleton:
        return compose_mod.Skeleton.build(self.definition, self.spec.agency, self.config.city.domain.lower())

    @cached_property
    def trace_header(self) -> bytes:
        return authentication_results(self.config.server.hostname, self.spec.agency.id, self.spec.agency.sender)

    @cached_property
    def signer(self) -> SmimeSigner | None:
        """The agency's S/MIME signer, where ca.sign_notices is on and the city CA gave the agency
        a certificate (``civicmail ca issue agency``); None: notices go unsigned."""
        if not self.config.ca.sign_notices:
            return None
        from mailserver.identity.ca import AgencySigner

        found = AgencySigner.load(self.config.data_path(self.config.ca.dir), self.spec.agency.id)
        return None if found is None else SmimeSigner(found.key, found.cert, found.chain)

    @cached_property
    def structure(self) -> NoticeStructure:
        return NoticeStructure(self.skeleton.from_header[len("From: "):], self.trace_header,
                               self.skeleton.fixed_headers)

    @cached_property
    def key_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.definition.all_fields if f.name != "reference")


# -- the row stages: each takes the rows still on their way and may stop some -----------------

def stage_validate(ctx: RowContext, rows: list[RowState]) -> None:
    for r in rows:
        values, errors = validate_mod.validate_row(ctx.definition, ctx.spec.mapping, r.cells)
        if errors:
            r.stop(INVALID, "validate", "; ".join(str(e) for e in errors))
            continue
        r.values = values
        r.id_index = ctx.keyring.index(values["id_number"])
        r.key = idempotency_key(ctx.spec.agency.id, ctx.definition.id, values, r.id_index, ctx.key_fields)


def stage_match(ctx: RowContext, rows: list[RowState]) -> None:
    """Match, then set aside rows already delivered (a rerun) before the costly stages; the
    deliver stage still decides, under the unique key, inside its transaction. Each read is
    retried after a database outage as the writer's batches are (``delivery.store_retry_seconds``):
    a node that stalled inside one (its connection ended by the server) goes on when it wakes."""
    retry = ctx.config.delivery.store_retry_seconds
    retrying(retry, match, ctx, rows)  # (it reads, then marks the rows)
    matched = [r for r in rows if r.status == RECEIVED]
    known = retrying(retry, _known, ctx, [(r.account_id, r.key) for r in matched])
    for r in matched:
        if (r.account_id, r.key) in known:
            r.stop(DUPLICATE, "match", DUPLICATE_REASON)


def _known(ctx: RowContext, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
    # external mode: a key still 'sending' (a run that stopped mid-batch) is sent again (delivery/external.py)
    with ctx.store.reader() as s:
        return known_keys(s, keys, delivered_only=ctx.config.external_store)


def stage_render(ctx: RowContext, rows: list[RowState]) -> None:
    for r in rows:
        try:
            r.rendered = ctx.renderer.render(r.values, r.address)
        except RenderError as exc:
            r.stop(FAILED, "render", str(exc))
        except Exception as exc:  # a fault on one row fails that row, not the drop (retry later)
            r.stop(FAILED, "render", reasons.INTERNAL.format(stage="render", error=exc.__class__.__name__))


def stage_compose(ctx: RowContext, rows: list[RowState]) -> None:
    date = format_datetime(dt.datetime.now().astimezone())
    for r in rows:
        try:
            r.rendered = compose_mod.compose_notice(ctx.skeleton, r.rendered, r.citizen_name, r.address, r.key, date)
        except Exception as exc:
            r.stop(FAILED, "compose", reasons.INTERNAL.format(stage="compose", error=exc.__class__.__name__))
            r.rendered = None


def stage_sign(ctx: RowContext, rows: list[RowState]) -> None:
    """The agency's S/MIME signature where it has a certificate (``sign.SmimeSigner``), the
    server's trace header on top (``r.raw``); the composed pieces stay for ``structure``."""
    signer = ctx.signer
    for r in rows:
        try:
            r.signed = signer.sign_notice(r.rendered) if signer is not None else None
            r.raw = sign_raw(r.rendered.raw if r.signed is None else r.signed.raw, ctx.trace_header)
        except Exception as exc:  # a row is cheaper to lose than a drop
            r.stop(FAILED, "sign", reasons.INTERNAL.format(stage="sign", error=exc.__class__.__name__))
            r.rendered = r.signed = r.raw = None


def stage_structure(ctx: RowContext, rows: list[RowState]) -> None:
    """The structure (what ``analyze`` would give) from the composed pieces (``structure``) and
    the signature; a failure is the sign stage's, as rows report it."""
    for r in rows:
        notice, signed, r.rendered, r.signed = r.rendered, r.signed, None, None
        try:
            r.analyzed = ctx.structure.analyzed(notice, signed)
        except Exception as exc:  # a row is cheaper to lose than a drop
            r.stop(FAILED, "sign", reasons.INTERNAL.format(stage="analyze", error=exc.__class__.__name__))
            r.raw = None


STAGES = {
    "validate": stage_validate,
    "match": stage_match,
    "consent": consent,
    "render": stage_render,
    "compose": stage_compose,
    "sign": stage_sign,
    "structure": stage_structure,
}


def paper_fallback(ctx: RowContext, rows: list[RowState]) -> None:
    """Unmatched rows get their text rendered for the paper-mail export."""
    for r in rows:
        if r.status == UNMATCHED and r.values:
            try:
                r.paper = ctx.renderer.render_text(r.values)
            except RenderError as exc:
                r.paper = ("", str(exc))


def paper_letters(ctx: RowContext, rows: list[RowState]) -> None:
    """The letters of stored unmatched rows (a paper-mail export rebuilt from the store): their
    cells validated again for the typed values, then rendered as at the first run. A row that no
    longer validates (its notice type changed since) still gets a line, with the reason."""
    stage_validate(ctx, rows)
    for r in rows:
        r.status = UNMATCHED
    paper_fallback(ctx, rows)
    for r in rows:
        if r.paper is None:
            r.paper = ("", r.reason or "")


def process_rows(ctx: RowContext, rows: list[RowState], clock: StageCpu | None = None) -> list[RowState]:
    """Run a chunk through the row stages: the one loop. ``clock``: each stage's CPU is added to it."""
    t = stagecpu.now()
    for name in ROW_STAGES:
        STAGES[name](ctx, [r for r in rows if r.status == RECEIVED])
        if clock is not None:
            t = clock.add(name, t)
    paper_fallback(ctx, rows)
    if clock is not None:
        clock.add("render", t)
    return rows


# -- worker processes --------------------------------------------------------------------------
_worker: RowContext | None = None


def _raise_gc_threshold() -> tuple[int, ...]:
    """The cyclic collector's first threshold raised to GC_THRESHOLD; returns the one before."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_THRESHOLD), *before[1:])
    return before


@contextlib.contextmanager
def fewer_collections():
    """GC_THRESHOLD for the block (the process may be a server: the threshold is restored)."""
    before = _raise_gc_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def init_worker(spec: RunSpec, parent_pid: int) -> None:
    global _worker
    _worker = RowContext(spec)
    _raise_gc_threshold()  # for good: a worker only runs rows
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose parent died (SIGKILL: no chance to stop its pool) exits instead of waiting
    forever: a forked worker holds its own copy of the job pipe's write end, so it would never
    see the pipe close."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def process_chunk(chunk: list[tuple[int, dict[str, str]]]) -> tuple[list[tuple], dict[str, float]]:
    """A worker's job: a chunk of rows in, their outcomes out as compact tuples (``pack``), with
    the CPU seconds each stage took on them."""
    assert _worker is not None, "init_worker was not called"
    clock = StageCpu()
    rows = process_rows(_worker, [RowState(line, cells) for line, cells in chunk], clock)
    t = stagecpu.now()
    packed = [pack(r) for r in rows]
    clock.add("transfer", t)
    return packed, clock.seconds


def pack(r: RowState) -> tuple:
    """What the writer needs of a finished row, as plain values: a tuple pickles and unpickles in
    a third of the time of the RowState, and the writer's process is the pipeline's narrow part.
    The row's cells stay behind (the writer still has them)."""
    a = r.analyzed
    # (the sort fields as a plain tuple: a NamedTuple pickles through its class, at ten times the cost)
    analyzed = None if a is None else (a.size, a.header_size, a.envelope, a.body, a.bodystructure, a.search_text,
                                       None if a.sort is None else tuple(a.sort))
    paper = None if r.paper is None else (r.paper, r.values.get("name", ""), r.values.get("id_number", ""))
    # application notices: what the writer needs to thread them (delivery/applications.py)
    thread = ((r.values[NUMBER_FIELD], r.values.get("status", "")) if r.values.get(NUMBER_FIELD) else None)
    return (r.line, r.status, r.stage, r.reason, r.key, r.account_id, r.raw, analyzed, paper, thread)


def unpack(packed: tuple) -> RowState:
    line, status, stage, reason, key, account_id, raw, analyzed, paper, thread = packed
    r = RowState(line, {}, status=status, stage=stage, reason=reason, key=key, account_id=account_id, raw=raw)
    if analyzed is not None:
        size, header_size, envelope, body, bodystructure, search_text, sort = analyzed
        r.analyzed = Analyzed(size, header_size, envelope, body, bodystructure, search_text,
                              None if sort is None else SortFields(*sort))
    if paper is not None:
        r.paper, name, number = paper
        r.values = {"name": name, "id_number": number}
    if thread is not None:
        r.values[NUMBER_FIELD], r.values["status"] = thread
    return r

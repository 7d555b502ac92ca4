"""Group commit: one writer task turns the deliveries of many sessions into one transaction.

A session hands its message to ``submit`` and waits. Two stages run in the executor: the
analyser takes everything waiting and computes its structure (``mime.analyze``); the writer
takes every analysed batch waiting and commits them in one transaction, then answers each
waiter. While one commit runs, new messages pile up and go into the next: the batch grows with
the load, so twenty sessions share one fsync instead of queuing for twenty.
Acknowledged means durable: a waiter hears STORED only after the commit returned.
Bounded: a waiter hears UNAVAILABLE at its deadline (``store.commit_timeout``) if the store has
not answered, and its message is then never stored (``CommitGuard``, ``Store.commit_before``).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import StoreUnavailable
from ..mime import Analyzed, analyze
from ..outbound.queue import enqueue
from ..store import bodies
from ..store.api import NewMessage
from ..store.outage import CommitGuard, OutageLog, is_outage
from ..timeouts import within

log = logging.getLogger("civicmail.smtp")

#: most messages in one transaction (bounds the time one commit holds the write lock)
MAX_BATCH = 500


class Outcome(enum.Enum):
    STORED = "stored"
    OVER_QUOTA = "over-quota"
    FAILED = "failed"
    #: the store did not answer before the deadline (or is down): not stored, never will be
    UNAVAILABLE = "unavailable"


@dataclass
class Pending:
    raw: bytes
    account_ids: list[int]
    #: recipients in other domains: an outbound queue entry
    remote: list[str] = field(default_factory=list)
    sender: str = ""
    sender_account_id: int | None = None
    analyzed: Analyzed | None = None
    #: set when stored: the outbound queue entry, if any
    queue_id: int | None = None
    #: the waiter's deadline (set by submit)
    guard: CommitGuard | None = None
    #: the body's key in the blob store, put there before the transaction (``stage_bodies``)
    blob_key: str = ""
    blob_epoch: int | None = None


def analyze_all(items: list[Pending]) -> None:
    """Blocking: the cached structure of each message (a failure leaves it to commit())."""
    for p in items:
        if p.analyzed is None:
            try:
                p.analyzed = analyze(p.raw)
            except Exception:
                log.exception("message analysis failed")


def stage_bodies(store, items: list[Pending]) -> None:
    """Blocking: put the bodies of messages for local mailboxes in the blob store before their
    transaction (``bodies.stage``), beside the commit of the batch before. A failure here is
    logged only: the write transaction puts them again, and answers its failure."""
    local = [p for p in items if p.account_ids and not p.blob_key]
    probes = [NewMessage(account_id=0, raw=p.raw) for p in local]
    try:
        bodies.stage(store, probes)
    except Exception:
        log.exception("storing %d message bodies in the blob store failed", len(probes))
        return
    for p, m in zip(local, probes):
        p.blob_key, p.blob_epoch = m.blob_key, m.blob_epoch


class GroupCommitter:
    def __init__(self, store, run, default_quota: int, max_batch: int = MAX_BATCH, timeout: float = 60.0,
                 outage: OutageLog | None = None, on_commit: Callable[[float], None] | None = None) -> None:
        self._store = store
        #: the mail store (store/api.py) the messages go into, in the transaction of ``store``
        self._mail = store.mail
        self._run = run  # ServerContext.run: the thread executor
        self._default_quota = default_quota
        self._max_batch = max_batch
        #: seconds a session waits for its commit (store.commit_timeout)
        self._timeout = timeout
        self._outage = outage or OutageLog()
        #: told the seconds of each COMMIT (the metrics), in the writer's thread
        self._on_commit = on_commit
        #: sessions' messages, waiting for analysis
        self._incoming: asyncio.Queue[tuple[Pending, asyncio.Future] | None] = asyncio.Queue()
        #: analysed batches, waiting for the writer
        self._analyzed: asyncio.Queue[list[tuple[Pending, asyncio.Future]] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        #: figures for the log and the benchmark
        self.commits = 0
        self.messages = 0

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._analyzer(), name="smtp-analyze"),
                           loop.create_task(self._writer(), name="smtp-group-commit")]

    async def stop(self) -> None:
        """Commit what is waiting, then end."""
        if self._tasks:
            self._incoming.put_nowait(None)
            await asyncio.gather(*self._tasks)
            self._tasks = []

    async def submit(self, pending: Pending) -> Outcome:
        pending.guard = CommitGuard.within(self._timeout)
        future = asyncio.get_running_loop().create_future()
        self._incoming.put_nowait((pending, future))
        # The commit goes on even if this session is cancelled (client gone): shield it.
        try:
            return await within(asyncio.shield(future), self._timeout)
        except asyncio.TimeoutError:
            pass
        # Past the deadline. Before its COMMIT started the write is abandoned (rolled back if it
        # gets that far). Once started, a SQLite COMMIT (a local file) is waited for; a PostgreSQL
        # one is refused by the database itself after the deadline (Store.commit_before).
        if pending.guard.abandon() or self._store.dialect != "sqlite":
            self._outage.failed("commit", StoreUnavailable(f"no commit within {self._timeout:g} s"))
            return Outcome.UNAVAILABLE
        return await asyncio.shield(future)

    # Two stages, each in the executor: while one batch commits (mostly waiting for the disk,
    # GIL released) the next is analysed. Structure is computed outside the write transaction.
    async def _analyzer(self) -> None:
        while True:
            first = await self._incoming.get()
            if first is None:
                self._analyzed.put_nowait(None)
                return
            batch = [first]
            if self._incoming.empty():
                await asyncio.sleep(0)  # let sessions that are ready right now join this batch
            stopping = False
            while len(batch) < self._max_batch and not self._incoming.empty():
                item = self._incoming.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._run(analyze_all, [p for p, _ in batch])
            if self._store.blobs is not None:
                await self._run(stage_bodies, self._store, [p for p, _ in batch])
            self._analyzed.put_nowait(batch)
            if stopping:
                self._analyzed.put_nowait(None)
                return

    async def _writer(self) -> None:
        while True:
            first = await self._analyzed.get()
            if first is None:
                return
            batch = list(first)
            stopping = False
            while len(batch) < self._max_batch and not self._analyzed.empty():
                more = self._analyzed.get_nowait()
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            try:
                outcomes = await self._run(self.commit, [p for p, _ in batch])
            except Exception:  # commit() answers every failure itself; this is a last resort
                log.exception("group commit failed")
                outcomes = [Outcome.FAILED] * len(batch)
            for (_, future), outcome in zip(batch, outcomes):
                if not future.done():
                    future.set_result(outcome)
            if stopping:
                return

    # -- in the executor ------------------------------------------------------------------
    def commit(self, items: list[Pending]) -> list[Outcome]:
        """Blocking: store the items in one transaction; one outcome per item."""
        outcomes: list[Outcome | None] = [None] * len(items)
        live: list[int] = []
        for n, p in enumerate(items):
            try:
                p.analyzed = p.analyzed or analyze(p.raw)
                live.append(n)
            except Exception:  # a bug in analysis must cost one message a retry, not the batch
                log.exception("message analysis failed")
                outcomes[n] = Outcome.FAILED
        if live:
            for n, outcome in zip(live, self._commit_analyzed([items[n] for n in live])):
                outcomes[n] = outcome
        return [o or Outcome.FAILED for o in outcomes]

    def _commit_analyzed(self, items: list[Pending]) -> list[Outcome]:
        """Blocking: one transaction for the items whose waiters still wait; one outcome each."""
        waiting = [n for n, p in enumerate(items) if not (p.guard and p.guard.abandoned)]
        outcomes = [Outcome.UNAVAILABLE] * len(items)
        if waiting:
            for n, outcome in zip(waiting, self._commit_waiting([items[n] for n in waiting])):
                outcomes[n] = outcome
        return outcomes

    def _commit_waiting(self, items: list[Pending]) -> list[Outcome]:
        outcomes = [Outcome.STORED] * len(items)
        reached_commit = False
        guards = [p.guard or CommitGuard.within(self._timeout) for p in items]
        try:
            with self._store.sessions() as session:
                for n in self._mail.over_quota(session, [(len(p.raw), p.account_ids) for p in items],
                                               self._default_quota):
                    outcomes[n] = Outcome.OVER_QUOTA
                storing = [p for p, o in zip(items, outcomes) if o is Outcome.STORED]
                messages = [NewMessage(account_id=a, raw=p.raw, analyzed=p.analyzed, sender=p.sender, blob_key=p.blob_key,
                                       blob_epoch=p.blob_epoch) for p in storing for a in p.account_ids]
                self._mail.deliver_in(session, messages)
                for p in storing:
                    if p.remote:
                        p.queue_id = enqueue(session, p.sender, p.remote, p.raw, p.sender_account_id)
                reached_commit = True
                claimed = [g for g in guards if g.claim()]
                if len(claimed) < len(guards):
                    # Some waiter gave up meanwhile: its message must not be stored. The others
                    # go again (rolled back, in a transaction of their own).
                    session.rollback()
                    for g in claimed:
                        g.release()
                    return self._commit_analyzed(items)
                try:
                    started = time.monotonic()
                    self._store.commit_before(session, min(g.at for g in guards))
                    if self._on_commit is not None:
                        self._on_commit(time.monotonic() - started)
                except BaseException:
                    for g in guards:
                        g.release()
                    raise
        except Exception as exc:
            # The store itself failing (locked, disk, connection) fails every message at once:
            # retrying them one by one would only wait out the same failure again and again.
            if is_outage(exc):
                self._outage.failed(f"storing {len(items)} message(s)", exc)
                return [Outcome.UNAVAILABLE] * len(items)
            if reached_commit or len(items) == 1:
                log.exception("storing %d message(s) failed", len(items))
                return [Outcome.FAILED] * len(items)
            # Something in the batch failed before the commit (all rolled back): find which,
            # one transaction per message, so that one bad message does not fail the others.
            log.warning("batch of %d failed before commit; storing one by one", len(items))
            return [self._commit_analyzed([p])[0] for p in items]
        self._outage.succeeded()
        self.commits += 1
        self.messages += len(items)
        self._mail.changed({m.folder_id for m in messages})
        return outcomes


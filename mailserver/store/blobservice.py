"""The blob store's housekeeping in `civicmail serve`: the collector (released blobs every
``blobs.gc_interval`` seconds, the sweep for orphans once an hour) and, while bodies are still
in the database, their move to the blob store in small batches (``blobs.migrate_batch``). One
node at a time does each (a lease); the work itself is safe on several at once."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from . import bodies, leases

log = logging.getLogger("civicmail.blobs")

#: seconds between two batches of the background move (the store's other work goes first)
MIGRATE_PAUSE = 0.5
#: collector rounds between two sweeps for orphans
SWEEP_EVERY = 3600.0


class BlobHousekeeper:
    name = "blob-housekeeping"

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.ctx.config.blobs
        if cfg.gc_interval > 0:
            self._tasks.append(loop.create_task(self._collect(cfg.gc_interval), name="blob-gc"))
        if cfg.migrate_batch > 0:
            self._tasks.append(loop.create_task(self._migrate(cfg.migrate_batch), name="blob-migrate"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _collect(self, interval: float) -> None:
        store, grace = self.ctx.store, self.ctx.config.blobs.orphan_grace_minutes * 60.0
        since_sweep = SWEEP_EVERY  # the first round sweeps too
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.ctx.run(leases.claim, store, "blobs-gc", interval * 2):
                    continue
                released = await self.ctx.run(bodies.collect_released, store)
                since_sweep += interval
                orphans = 0
                if since_sweep >= SWEEP_EVERY:
                    since_sweep = 0.0
                    _, orphans = await self.ctx.run(bodies.collect_orphans, store, grace)
                if released or orphans:
                    log.info("blob gc: deleted %d released and %d orphan blob(s)", released, orphans)
            except Exception:  # the next round tries again; serving mail goes on
                log.exception("blob gc failed")

    async def _migrate(self, batch: int) -> None:
        store = self.ctx.store
        await asyncio.sleep(MIGRATE_PAUSE)
        while True:
            try:
                if not await self.ctx.run(leases.claim, store, "blobs-migrate", 60.0):
                    await asyncio.sleep(60.0)
                    continue
                moved = await self.ctx.run(bodies.migrate_bodies, store, batch, batch)
                if moved < batch:  # done: nothing left in the database
                    log.info("blob migrate: every body is in the blob store")
                    await self.ctx.run(leases.release, store, "blobs-migrate", True)
                    return
            except Exception:
                log.exception("moving bodies to the blob store failed; trying again in a minute")
                await asyncio.sleep(60.0)
            await asyncio.sleep(MIGRATE_PAUSE)


def make_services(ctx) -> list:
    return [BlobHousekeeper(ctx)] if ctx.store.blobs is not None else []

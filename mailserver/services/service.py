"""The citizen services in `civicmail serve`: the worker that answers service mail (the
one-click unsubscribe endpoint is on the HTTP listener, mailserver/web).

The worker wakes when a service INBOX changes in this process (``ctx.hub``, which SMTP and the
pipeline notify after their commits) and, as a fallback for writes by other processes or nodes,
every POLL_SECONDS; each round also picks up service addresses created since (by the CLI).
"""
from __future__ import annotations

import asyncio
import logging

from ..timeouts import within
from .topics import ensure_statements
from .worker import ServiceInbox, process_pending, service_inboxes

log = logging.getLogger("civicmail.services")

POLL_SECONDS = 2.0
#: every so many rounds, look at every message again (not only past the MODSEQ watermark):
#: insurance against a message another worker claimed and then failed to commit
FULL_SCAN_ROUNDS = 150


class ServicesWorker:
    name = "citizen services"

    def __init__(self, ctx, poll_seconds: float = POLL_SECONDS) -> None:
        self.ctx = ctx
        self.poll_seconds = poll_seconds
        self.inboxes: dict[int, ServiceInbox] = {}
        self.handled = 0
        self.rounds = 0
        #: folder id -> MODSEQ up to which everything is handled (worker.pending_messages)
        self.since: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _changed(self, _folder_id: int) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # the address every optional statement names (List-Unsubscribe), in a city made before
        # `init` made it
        await self.ctx.run(ensure_statements, self.ctx.registry)
        await self._refresh()
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # its end; a cancel of this stop still reaches it
            self._task = None
        for fid in self.inboxes:
            self.ctx.hub.unsubscribe(fid, self._changed, self._loop)

    async def _refresh(self) -> None:
        inboxes = await self.ctx.run(service_inboxes, self.ctx.store)
        for fid in inboxes.keys() - self.inboxes.keys():
            self.ctx.hub.subscribe(fid, self._changed, self._loop)
        for fid in self.inboxes.keys() - inboxes.keys():
            self.ctx.hub.unsubscribe(fid, self._changed, self._loop)
        self.inboxes = inboxes

    async def run_once(self) -> int:
        """One round: new service addresses, then every unhandled message."""
        await self._refresh()
        self.rounds += 1
        if self.rounds % FULL_SCAN_ROUNDS == 0:
            self.since = {}
        n = await self.ctx.run(process_pending, self.ctx.registry, dict(self.inboxes), self.since)
        self.handled += n
        return n

    async def _run(self) -> None:
        while True:
            try:
                await within(self._wake.wait(), self.poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # the store restarting: try again next round
                log.warning("citizen services round failed", exc_info=True)


def make_services(ctx) -> list:
    return [ServicesWorker(ctx)]

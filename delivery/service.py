"""The pipeline's part of `civicmail serve`: the spool watcher and the drop mailbox watcher.

Both poll (the spool is a folder an agency's system writes into; the drop mailbox is read
through the store) and run drops in the server's thread executor, one at a time, so the event
loop never blocks. Stopping waits for the drop in flight: its batches commit or roll back
whole, and a rerun resumes it. A drop that fails is set aside and the next one runs (``shunt``).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mailserver.store import leases

from .maildrop import WATCHER, ensure_drop_mailbox, process_new_mail
from .shunt import store_unavailable
from .spool import pending_files, process_file

log = logging.getLogger("civicmail.delivery")
POLL_SECONDS = 2.0


class _Poller:
    name = "poller"

    def __init__(self, ctx, interval: float = POLL_SECONDS) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        #: set after each scan (tests wait on it)
        self.scanned = asyncio.Event()

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.scan()
            except Exception:  # a broken scan must not end the watcher
                log.exception("%s: scan failed", self.name)
            self.scanned.set()
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def scan(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class SpoolWatcher(_Poller):
    name = "spool"

    async def start(self) -> None:
        self.spool = self.ctx.config.data_path(self.ctx.config.delivery.spool_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        #: files that ran but could not be moved out of the spool, with their (mtime, size) then:
        #: left alone until they change, not run again on every poll
        self.stuck: dict[Path, tuple[int, int]] = {}
        await super().start()

    async def scan(self) -> None:
        for agency, notice_type, path in await self.ctx.run(pending_files, self.spool):
            if self._stopping.is_set():
                return
            if self.stuck.get(path) == _stamp(path):
                continue
            try:
                await self.ctx.run(process_file, self.ctx.registry, agency, notice_type, path)
            except Exception as exc:
                if store_unavailable(exc):
                    log.warning("spool: the store is unavailable; %s waits for the next round", path.name)
                    return
                log.error("spool: %s could not be moved out of the spool; left alone until it changes",
                          path, exc_info=exc)
                self.stuck[path] = _stamp(path)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


class MailDropWatcher(_Poller):
    name = "maildrop"

    async def start(self) -> None:
        # The drop address must exist before SMTP is asked to accept mail for it.
        await self.ctx.run(ensure_drop_mailbox, self.ctx.registry)
        await super().start()

    async def scan(self) -> None:
        await self.ctx.run(process_new_mail, self.ctx.registry)

    async def stop(self) -> None:
        await super().stop()
        try:  # another node's watcher may take over at once, not after the lease
            await self.ctx.run(leases.release, self.ctx.store, WATCHER)
        except Exception as exc:
            log.warning("maildrop: the watcher's lease was not released: %s", exc.__class__.__name__)


def make_services(ctx) -> list:
    return [SpoolWatcher(ctx), MailDropWatcher(ctx)]

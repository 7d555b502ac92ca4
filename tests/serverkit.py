"""The servers as `civicmail serve` runs them, for tests: services on an event loop in a thread,
real sockets on ephemeral ports (configure every listener as 127.0.0.1:0 and ask ``port``)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import threading
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy import select

from mailserver.registry import Registry
from mailserver.server import ServerContext, build_services
from mailserver.store import Store, bodies, open_store
from mailserver.store.models import Account, Content, Folder, Message

T = TypeVar("T")


def prepared_city(data_dir: Path, overrides: tuple[str, ...], populate: Callable[[Registry], T],
                  store_url: str | None = None) -> tuple[object, T]:
    """A prepared data directory (``civicmail init`` without the demo) and what ``populate``
    registered in it: (config, populate's result)."""
    from mailserver.provision import prepare
    from tests.conftest import make_config

    config = make_config(data_dir, *overrides, store_url=store_url)
    prepare(config)
    store = open_store(config)
    try:
        return config, populate(Registry(config, store))
    finally:
        store.dispose()


def mailbox_raw(store: Store, address: str, folder: str = "INBOX") -> list[bytes]:
    """Raw bytes of the messages in an account's folder, in UID order."""
    with store.reader() as s:
        rows = s.execute(
            select(Content.raw, Content.blob_key).join(Message, Message.content_id == Content.id)
            .join(Folder, Folder.id == Message.folder_id).join(Account, Account.id == Folder.account_id)
            .where(Account.address == address, Folder.name == folder).order_by(Message.uid)).all()
    return [bodies.body(store, raw, key) for raw, key in rows]


class LoopServer:
    """Services made by ``factory`` (default: every SERVICE_FACTORIES entry) over ``config``."""

    def __init__(self, config, factory: Callable[[ServerContext], list] = build_services) -> None:
        self.config = config
        self.factory = factory
        self.services: list = []

    def start(self):
        store = open_store(self.config)
        self.ctx = ServerContext(self.config, store, Registry(self.config, store))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.services = self.factory(self.ctx)
        for service in self.services:
            await service.start()

    async def _stop(self) -> None:
        for service in reversed(self.services):
            await service.stop()

    def call(self, coro, timeout: float = 120):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # say where it hangs: every thread, every task
            faulthandler.dump_traceback(all_threads=True)
            for task in asyncio.all_tasks(self.loop):
                task.print_stack()
            raise

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            self.ctx.shutdown()
            self.ctx.store.dispose()

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def registry(self) -> Registry:
        return self.ctx.registry

    def port(self, kind: str) -> int:
        """The bound port of the listener of this kind (or name)."""
        return next(s.address[1] for s in self.services if getattr(s, "kind", getattr(s, "name", None)) == kind)

    def inbox(self, address: str, folder: str = "INBOX") -> list[bytes]:
        return mailbox_raw(self.store, address, folder)

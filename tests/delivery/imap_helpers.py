"""The IMAP server of civicmail on an ephemeral loopback port, in a background thread."""
from __future__ import annotations

import asyncio
import contextlib
import threading

from mailserver.registry import Registry
from mailserver.server import ServerContext
from mailserver.store import open_store


@contextlib.contextmanager
def imap_server(config):
    """Yields the bound port of a plain IMAP listener (loopback: AUTH allowed in development)."""
    from mailserver.imap.service import ImapService, WatcherService

    store = open_store(config)
    ctx = ServerContext(config, store, Registry(config, store))
    loop = asyncio.new_event_loop()
    imap = ImapService(ctx, "127.0.0.1:0", False, "imap")
    watcher = WatcherService(ctx)
    ready = threading.Event()

    async def up():
        await watcher.start()
        await imap.start()
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(up()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield imap.address[1]
    finally:
        async def down():
            await imap.stop()
            await watcher.stop()

        asyncio.run_coroutine_threadsafe(down(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        ctx.shutdown()
        store.dispose()

"""A real IMAP server on 127.0.0.1 (ephemeral ports) in a background thread, with two citizens."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import imaplib
import threading
from dataclasses import dataclass
from typing import Iterator

import hypothesis.internal.observability  # noqa: F401  (see below)
import pytest
from sqlalchemy import select

from mailserver.identity import idnumber
from mailserver.imap.service import ImapService, WatcherService
from mailserver.registry import Registry
from mailserver.registry.citizens import add_citizen
from mailserver.server import ServerContext
from mailserver.store import open_store
from mailserver.store.models import Account

# Imported up front: Hypothesis's pytest plugin otherwise imports it at the end of the run, and
# CPython 3.11.7 then sometimes fails compiling it under assertion rewriting ("AST constructor
# recursion depth mismatch", a CPython bug fixed in later 3.11 releases) after these tests.

PASSWORD = "correct horse battery"


@dataclass
class Running:
    ctx: ServerContext
    loop: asyncio.AbstractEventLoop
    imap: ImapService
    imaps: ImapService
    users: list[tuple[str, int]]  # (address, account id)

    @property
    def port(self) -> int:
        return self.imap.address[1]

    @property
    def tls_port(self) -> int:
        return self.imaps.address[1]

    def client(self, user: int = 0, login: bool = True) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        if login:
            c.login(self.users[user][0], PASSWORD)
        return c

    def raw(self, user: int = 0) -> "Raw":
        """A line-level client, logged in."""
        raw = Raw(self.port)
        assert raw.command("l", f'LOGIN "{self.users[user][0]}" "{PASSWORD}"')[-1].startswith(b"l OK")
        return raw

    def call(self, fn, *args):
        """Run a blocking store function (as another writer would) from the test thread."""
        return fn(*args)


def start_server(config, overrides=None, watcher_on: bool = True) -> Running:
    """``watcher_on=False``: without the FolderWatcher (its poll of the database, for writers in
    other processes), so that only the change hub tells sessions of this process's writes."""
    store = open_store(config)
    registry = Registry(config, store)
    users = []
    for n, name in enumerate(("张伟", "王芳")):
        made = add_citizen(registry, name, idnumber.make("330106", dt.date(1980, 1, n + 1), n + 1), password=PASSWORD)
        with store.reader() as s:
            users.append((made.address, s.scalar(select(Account.id).where(Account.address == made.address))))
    ctx = ServerContext(config, store, registry)
    loop = asyncio.new_event_loop()
    imap = ImapService(ctx, "127.0.0.1:0", False, "imap")
    imaps = ImapService(ctx, "127.0.0.1:0", True, "imaps")
    watcher = WatcherService(ctx)
    if not watcher_on:
        watcher.watcher.start = lambda: None  # never polls; its stop() then has nothing to stop
    ready = threading.Event()

    async def main():
        await watcher.start()
        await imap.start()
        await imaps.start()
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    running = Running(ctx, loop, imap, imaps, users)
    running._stop = lambda: _stop(running, watcher, thread)  # type: ignore[attr-defined]
    return running


@contextlib.contextmanager
def server_with(data_dir, *overrides: str) -> Iterator[Running]:
    """A prepared data directory with config ``overrides`` and the server over it, for a test."""
    from mailserver.provision import prepare
    from tests.conftest import make_config

    cfg = make_config(data_dir, *overrides)
    prepare(cfg)
    running = start_server(cfg)
    try:
        yield running
    finally:
        running._stop()  # type: ignore[attr-defined]


def _stop(running: Running, watcher: WatcherService, thread: threading.Thread) -> None:
    async def down():
        await running.imap.stop()
        await running.imaps.stop()
        await watcher.stop()

    asyncio.run_coroutine_threadsafe(down(), running.loop).result(30)
    running.loop.call_soon_threadsafe(running.loop.stop)
    thread.join(30)
    running.loop.close()
    running.ctx.shutdown()
    running.ctx.store.dispose()


class Raw:
    """A line-level client for what imaplib will not send."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rwb")
        self.greeting = self.file.readline()

    def send(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, tag: str, text: str) -> list[bytes]:
        """Send one line; return every line up to the tagged reply."""
        self.send(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag.encode() + b" ") or not line:
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def server(sqlite_config):
    running = start_server(sqlite_config)
    yield running
    running._stop()


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    try:
        c.logout()
    except Exception:
        pass

"""The servers as `civicmail serve` runs them, for tests: services on an event loop in a thread,
real sockets on ephemeral ports (configure every listener as 127.0.0.1:0 and ask ``port``).

Ports: a listener bound to port 0 is never raced for. Ask the bound port of the services here
(``LoopServer.port``), and of `serve` in a subprocess from its log (``listening_port``). Only a
port that must be known before its server starts (a URL in the configuration, a program that
cannot report what it bound) is picked beforehand, and then started with ``on_free_ports``: if
another process took it meanwhile, the start fails with EADDRINUSE and is made again on new ports.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import faulthandler
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

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


def free_ports(count: int = 1) -> list[int]:
    """``count`` different ports of 127.0.0.1 that were free a moment ago (bound together, then
    let go): another process may take one before its server binds it, so start that server
    with ``on_free_ports``."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens, for as long as the block runs: bound here
    without listening (a connection to it is refused) and without SO_REUSEADDR (no other
    process, nor a server started by mistake, can bind it meanwhile). A port merely free a
    moment ago may be taken, and answered, by the time the test connects."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


#: the most starts ``on_free_ports`` makes
PORT_TRIES = 5


def on_free_ports(start: Callable[..., T], count: int = 1) -> T:
    """``start(*ports)`` on ``count`` ports free a moment before. A start that fails because a
    port was taken meanwhile (an error whose text says "address already in use": serve's
    StartupError, a program's own message in an assertion) cleans up after itself and is made
    again on new ports, up to PORT_TRIES times; any other failure is raised at once."""
    for attempt in range(1, PORT_TRIES + 1):
        try:
            return start(*free_ports(count))
        except Exception as exc:
            if attempt == PORT_TRIES or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def listening_port(log: list[str], name: str) -> int:
    """The port `serve` (started with ``NAME.listen=127.0.0.1:0``) bound for its listener
    ``name`` ("imap", "imaps", "SMTP submission", "citizen services HTTP"), read from its log
    line "NAME listening on HOST:PORT"."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)} listening on \S+:(\d+)")
    found = [int(m.group(1)) for line in log if (m := pattern.search(line))]
    assert found, f"no '{name} listening on' in the log:\n" + "".join(log[-20:])
    return found[0]


def start_program(command: list[str], output: Path, ready: str, timeout: float = 30, **popen) -> subprocess.Popen:
    """``command`` started by a test, its output (stdout and stderr) in the file ``output``,
    returned once ``ready`` appears there (its listening line: "Development Server (...)
    started", "listening on"). Its ending first, or ``timeout``, kills it and fails with what it
    wrote (so ``on_free_ports`` sees an "Address already in use" there). A connection to its port
    would prove nothing: another process that took the port answers it too."""
    with output.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + timeout
    while ready not in output.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{command[0]} did not start (exit {proc.returncode}): "
                                 f"{output.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


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
        try:
            self.call(self._start())
        except BaseException:  # a listener could not bind: what started stops, so the start can be made again
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        self.services = []
        for service in self.factory(self.ctx):
            await service.start()
            self.services.append(service)

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

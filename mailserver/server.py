"""`civicmail serve`: the listeners, the outbound queue and the spool watcher on one asyncio loop.

Each part contributes services through a factory listed in SERVICE_FACTORIES:
``make_services(ctx: ServerContext) -> list[Service]``. A service's ``start`` binds its socket
(raising StartupError with a clear message if it cannot) and ``stop`` stops accepting, lets the
work in flight finish, and returns.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Hashable, Protocol, TypeVar

from .admission import ConnectionGate
from .config import Config
from .errors import AuthenticationFailed, CivicmailError, StoreUnavailable, Throttled
from .identity.throttle import LoginThrottle
from .lanes import BatchLane, HeavyLane, SpillLane, run_then
from .registry import Registry
from .registry.auth import Principal, authenticate
from .store import Store
from .store.api import MailStore
from .store.driver import OverBudget, OwnAutocommit, OwnReader
from .store.notify import ChangeHub
from .store.outage import OutageLog, is_outage
from .timeouts import within

log = logging.getLogger("civicmail.server")
auth_log = logging.getLogger("civicmail.auth")
T = TypeVar("T")

#: "module:function" of each part's service factory, started in this order
SERVICE_FACTORIES: tuple[str, ...] = (
    "mailserver.smtp.service:make_services",
    "mailserver.imap.service:make_services",
    "mailserver.services.service:make_services",
    "mailserver.web.service:make_services",
    "delivery.service:make_services",
    "mailserver.store.blobservice:make_services",
)


class StartupError(CivicmailError):
    """A service cannot start (port taken, certificate missing); the message says which."""


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ServerContext:
    """What every service shares: one per process."""

    config: Config
    #: the database (the registry, the outbound queue, leases ...)
    store: Store
    registry: Registry
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="store"))

    #: the store's availability as this process sees it (one traceback per outage)
    outage: OutageLog = field(default_factory=OutageLog)
    #: server.workers above 1 (imap/handoff.py): ("accept", [each worker's channel]) in the first
    #: process, ("work", its channel) in a worker; None: the IMAP listeners accept for themselves
    handoff: tuple | None = None
    #: the first process of several: starts a new worker in place of worker N whose channel
    #: closed, returning the first process's end of its new channel (workers.Workers.respawn)
    respawn_worker: Callable[[int], Any] | None = None
    #: serve has begun to stop (SIGTERM or SIGINT): its workers ending is expected, not a failure
    stopping: bool = False

    @property
    def mail(self) -> MailStore:
        """The mail store (store/api.py): every mailbox read and write goes through it."""
        return self.store.mail

    @property
    def hub(self) -> ChangeHub:
        """The mail store's change hub: sessions listen on it for committed changes."""
        return self.mail.hub

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        return LoginThrottle(self.config.login)

    async def login(self, ip: str, login: str, password: str, port: str) -> Principal:
        """Check a login for IMAP, SMTP and the web alike, under the login throttle: Throttled
        (refused unchecked), AuthenticationFailed, or the principal. The attempt is reserved before the
        password is checked (see identity/throttle.py); one whose client went away meanwhile
        still counts as a failure, so dropping connections buys no extra guesses. Refusals are
        logged (``auth-throttled`` / ``auth-failed client=IP port=...``; never the name tried,
        which is sometimes a password typed in the wrong field)."""
        return await self._throttled(ip, login, port, authenticate, self.registry, login, password)

    async def login_bearer(self, ip: str, login: str | None, token: str, port: str) -> Principal:
        """``login`` for an OpenID Connect access token with the ``mail`` scope (SASL OAUTHBEARER
        and XOAUTH2), under the same throttle; ``login`` is the address the client named, if any."""
        from .registry.oidc import bearer_principal

        if not self.config.oidc.enabled:
            raise AuthenticationFailed("tokens are not accepted")
        return await self._throttled(ip, login or "", port, bearer_principal, self.registry, token, login)

    async def _throttled(self, ip: str, login: str, port: str, check: Callable[..., Principal],
                         *args: Any) -> Principal:
        throttle = self.login_throttle
        metrics = self.metrics
        if not await throttle.acquire(ip, login):
            auth_log.info("auth-throttled client=%s port=%s", ip, port)
            metrics.login(port, "throttled")
            raise Throttled("too many failed logins")
        try:
            principal = await self.run_store(check, *args)
        except (AuthenticationFailed, asyncio.CancelledError):
            throttle.failed(ip, login)
            auth_log.info("auth-failed client=%s port=%s", ip, port)
            metrics.login(port, "failed")
            raise
        except BaseException:
            throttle.released(ip, login)
            metrics.login(port, "unavailable")
            raise
        throttle.succeeded(ip, login)
        metrics.login(port, "ok")
        return principal

    @cached_property
    def metrics(self):
        """This server's Prometheus series (metrics.py; imported here, not by the CLI)."""
        from .metrics import Metrics

        return Metrics(self.gate, self.registry.passwords)

    @cached_property
    def heavy(self) -> HeavyLane:
        return HeavyLane(self.config.imap.heavy_threads, self.config.imap.heavy_jobs_per_user)

    @cached_property
    def reads(self) -> BatchLane:
        """The read lane: cheap, bounded store reads, in batches (imap.read_threads); on SQLite
        each of its threads reads on a connection of its own (no pool checkout per read), on
        PostgreSQL one in autocommit (no pre-ping, BEGIN or ROLLBACK round trips per read)."""
        return BatchLane(self.config.imap.read_threads, "read", init=self._reader_connection)

    def _reader_connection(self) -> OwnReader | OwnAutocommit | None:
        """A read lane thread's connection of its own (held for its raw_readers), if any."""
        if self._own_connections:
            return OwnReader(self.store).hold()
        if self.store.dialect == "postgresql":
            return OwnAutocommit(self.store).hold()
        return None

    @property
    def _own_connections(self) -> bool:
        """SQLite on a file: a thread may keep a connection of its own (``OwnReader``)."""
        return self.store.dialect == "sqlite" and self.store.engine.url.database not in (None, "", ":memory:")

    @cached_property
    def writes(self) -> BatchLane | None:
        """On SQLite, the write lane: one thread runs the IMAP writes queued meanwhile in one
        transaction and one COMMIT (group commit without the hand-offs between threads),
        announces their changes after it, then makes each write's look (``then``) itself, on a
        connection of its own: handing the looks to the read lane cost a wake-up of its thread
        per batch, made holding the GIL, which stalled the loop more than the looks take. On
        PostgreSQL, with imap.pg_write_threads, a lane of that many threads (``SpillLane``: each
        write its own transaction, one at a time, within bounds per user and past a stalled
        write); with 0, None: the writes run side by side on the store threads."""
        if not self.mail.batches_writes:
            threads = self.config.imap.pg_write_threads
            if not threads or self.store.dialect != "postgresql":
                return None
            return SpillLane(threads, self.executor, self.config.imap.pg_write_jobs_per_user,
                             init=lambda: OwnAutocommit(self.store).hold())  # the looks' connection
        own = (lambda: OwnReader(self.store).hold()) if self._own_connections else None
        return BatchLane(1, "write", around=self.mail.batch, init=own)

    @cached_property
    def gate(self) -> ConnectionGate:
        """Every listener's client connections, bounded by the file limit (admission.py)."""
        return ConnectionGate(self.config.server.max_connections)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (the store, argon2) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def run_heavy(self, owner: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run work whose cost a client chooses (SEARCH, FETCH of bodies) on the heavy lane, at
        most imap.heavy_jobs_per_user at a time per ``owner``: ``run`` never waits for it."""
        return await self.heavy.run(owner, fn, *args)

    @cached_property
    def loop_reader(self) -> OwnReader | None:
        """With imap.loop_read_budget, on SQLite, the event loop's own connection for the cheap
        reads of small folders (store.driver.OwnReader), made by the loop's thread on its first
        read; else None."""
        budget = self.config.imap.loop_read_budget
        if not budget or not self._own_connections:
            return None
        return OwnReader(self.store, budget)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a cheap, bounded store read (one folder's counters, a batch of FLAGS rows): on
        SQLite on the event loop within a budget (``loop_reader``), else, or past the budget, on
        the read lane: no write and no login ever waits behind it, nor it behind them. A folder
        found too big for the loop goes straight to the lane for a while (``_big``)."""
        here = self.loop_reader
        if here is not None and here.usable():
            key = _size_key(fn, args)
            big = self._big
            if key is None or key not in big or big[key] < time.monotonic():
                try:
                    return here.run(fn, *args)
                except OverBudget:
                    if key is not None:
                        if len(big) >= _BIG_KEPT:
                            big.clear()
                        big[key] = time.monotonic() + _BIG_SECONDS
        return await self.reads.run(fn, *args)

    @cached_property
    def _big(self) -> dict:
        """(function, folder or account id) -> until when its reads skip the loop."""
        return {}

    async def run_write(self, fn: Callable[..., T], *args: Any, then: Callable[[T], Any] | None = None,
                        flags_only: bool = False, owner: Hashable = None, big: bool = False) -> Any:
        """Run an IMAP write (``fn`` writes through ``mailboxes.writing``) and then ``then(result)``
        in the same thread after its COMMIT: on SQLite on the write lane; on PostgreSQL on the
        store threads, or with imap.pg_write_threads on its lane (``SpillLane``), at most
        imap.pg_write_jobs_per_user of ``owner``'s there and none ``big`` (several messages,
        COPY, MOVE: those on the store threads). ``flags_only``: the write changes flags only (STORE, \\Recent): unless
        imap.fsync_flag_changes, its COMMIT on SQLite is not fsynced (store/groupcommit.py)."""
        lane = self.writes
        if lane is not None:
            durable = not flags_only or self.config.imap.fsync_flag_changes
            return await lane.run(fn, *args, then=then, durable=durable, owner=owner, big=big)
        return await self.run(run_then, fn, args, then)

    def shutdown(self) -> None:
        """Wait for the work in flight on every lane, then stop their threads."""
        self.executor.shutdown(wait=True)
        for lane in ("heavy", "writes", "reads"):
            if self.__dict__.get(lane) is not None:
                getattr(self, lane).shutdown()
        if self.__dict__.get("loop_reader") is not None:
            self.loop_reader.close()

    async def run_store(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """``run`` for store work a client waits on: StoreUnavailable if the database fails or
        does not answer within ``timeout`` (default store.lookup_timeout), so the client hears
        "try again later" before its own timeout. Work not yet started then never starts; a
        thread already waiting on the database is freed by the database bounds (db.py)."""
        what = getattr(fn, "__name__", "store")
        seconds = self.config.store.lookup_timeout if timeout is None else timeout
        try:
            result = await within(self.run(fn, *args, **kwargs), seconds)
        except asyncio.TimeoutError:
            error = StoreUnavailable(f"no answer within {seconds:g} s")
            self.outage.failed(what, error)
            raise error from None
        except Exception as exc:
            if not is_outage(exc):
                self.outage.succeeded()  # the database answered (e.g. "no such login")
                raise
            self.outage.failed(what, exc)
            raise StoreUnavailable(str(exc.__class__.__name__)) from exc
        self.outage.succeeded()
        return result

    async def certificate_login(self, ip: str, der: bytes, authzid: str, port: str) -> Principal:
        """AUTHENTICATE EXTERNAL with the client's TLS certificate (DER): the principal of the
        mailbox the city CA issued it to, or AuthenticationFailed (registry/ca.py). No password
        is guessed here, so the login throttle is not involved; refusals are logged alike."""
        from .registry.ca import certificate_principal

        try:
            principal = await self.run_store(certificate_principal, self.registry, der, authzid)
        except AuthenticationFailed:
            auth_log.info("auth-failed (certificate) client=%s port=%s", ip, port)
            self.metrics.login(port, "failed")
            raise
        self.metrics.login(port, "ok")
        return principal

    def tls_context(self, client_certificates: bool = False):
        """The server TLS context from tls.cert / tls.key; StartupError if they are missing.
        With ``client_certificates`` (the implicit-TLS listeners), and where ca.client_certificates
        is on and the city CA exists, a client may present a certificate (optional): it must chain
        to the city root, else the handshake fails."""
        import ssl

        cert, key = self.config.data_path(self.config.tls.cert), self.config.data_path(self.config.tls.key)
        if not cert.exists() or not key.exists():
            raise StartupError(f"TLS certificate {cert} or key {key} missing (run `civicmail init`, or set tls.cert "
                               "and tls.key)")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(f"cannot load TLS certificate {cert}: {exc}") from None
        if client_certificates and self.config.ca.client_certificates:
            from .identity.ca import ISSUING_CERT, ROOT_CERT

            ca_dir = self.config.data_path(self.config.ca.dir)
            if (ca_dir / ROOT_CERT).exists():
                try:
                    ctx.load_verify_locations(cadata=(ca_dir / ROOT_CERT).read_text() +
                                              (ca_dir / ISSUING_CERT).read_text())
                except (ssl.SSLError, OSError) as exc:
                    raise StartupError(f"cannot load the city CA from {ca_dir}: {exc}") from None
                ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


#: a read found too big for the event loop goes to the read lane for this long ...
_BIG_SECONDS = 60.0
#: ... remembered for this many (function, folder) pairs at most
_BIG_KEPT = 4096


def _size_key(fn: Callable, args: tuple) -> tuple | None:
    """What a read's size depends on: its function and the folder or account it reads (the
    id after the store, or the selected folder's, and a folder name after an account id), None
    if neither."""
    of = getattr(args[1], "folder_id", args[1]) if len(args) > 1 else None
    if not isinstance(of, int):
        return None
    name = args[2] if len(args) > 2 and isinstance(args[2], str) else None
    return getattr(fn, "func", fn), of, name


def run_loop(config: Config, main: Any) -> None:
    """Run the coroutine MAIN to its end on the event loop server.event_loop names."""
    if config.server.event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def build_services(ctx: ServerContext, factories: tuple[str, ...] = SERVICE_FACTORIES) -> list[Service]:
    services: list[Service] = []
    for spec in factories:
        module, _, func = spec.partition(":")
        services.extend(getattr(importlib.import_module(module), func)(ctx))
    return services


#: Seconds a stop may take before serve writes every thread's stack and its pending tasks to
#: stderr (once; it goes on stopping): a stop that hangs says where.
STOP_REPORT_AFTER = 20.0


def _stop_watchdog(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """A daemon timer that, if this process is still running SECONDS from now, writes where each
    thread is (faulthandler) and what each pending task awaits. The tasks are listed from the loop
    itself when it still runs callbacks, else read from this thread (diagnostic only)."""
    import faulthandler

    def tasks() -> None:
        for task in asyncio.all_tasks(loop):
            task.print_stack(limit=8, file=sys.stderr)

    def report() -> None:
        print(f"civicmail: still stopping after {seconds:g} s; thread stacks follow", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        try:
            loop.call_soon_threadsafe(tasks)
        except RuntimeError:  # the loop is closed: what hangs is past it (threads, exit)
            pass

    timer = threading.Timer(seconds, report)
    timer.daemon = True
    timer.start()


async def serve(ctx: ServerContext, ready: Callable[[], None] | None = None,
                factories: tuple[str, ...] = SERVICE_FACTORIES) -> None:
    """Start every service, wait for SIGTERM or SIGINT, stop them in reverse order. With
    server.workers above 1 the first process also starts the IMAP workers (workers.py) once its
    own listeners are bound, and stops them first."""
    from .workers import Workers

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    workers = Workers(ctx.config)
    if factories == SERVICE_FACTORIES and ctx.handoff is None:
        ctx.handoff = workers.channels()
        if ctx.handoff is not None:
            ctx.respawn_worker = workers.respawn
    services = build_services(ctx, factories)
    log.info("%s", ctx.gate.describe())
    log.info("event loop: %s", type(loop).__module__.partition(".")[0])
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        if factories == SERVICE_FACTORIES:
            await loop.run_in_executor(None, workers.start)
        log.info("civicmail ready: %d services", len(started))
        if ready:
            ready()
        await stop.wait()
        ctx.stopping = True
        log.info("shutting down")
        _stop_watchdog(loop, STOP_REPORT_AFTER)
    finally:
        if workers.procs:
            await loop.run_in_executor(None, workers.stop)
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:  # keep stopping the others
                log.exception("error stopping %s", service.name)
        ctx.shutdown()

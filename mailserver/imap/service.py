"""The IMAP listeners (``imap.listen`` with STARTTLS, ``imaps.listen`` with implicit TLS) and the
per-process watcher that turns other processes' writes into change notices."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import sys
import time
import weakref

from ..admission import ConnectionCounter, TLSAfterAdmission
from ..config import parse_hostport
from ..server import ServerContext, StartupError
from ..store.notify import FolderWatcher
from . import registry
from . import responses as R
from .handoff import HandoffHub, HandoffListener, HandoffWorker, RemotePlaces, RemoteUsers
from .session import ImapSession

log = logging.getLogger("civicmail.imap")
#: seconds between two recorded logins of one account
LOGIN_RECORD_INTERVAL = 600
#: the GIL switch interval while IMAP serves (the default is 5 ms)
SWITCH_INTERVAL = 0.0005


#: the log's reason for a refusal by imap.max_preauth_connections_per_ip
PREAUTH_REASON = "too many connections before login from this address (imap.max_preauth_connections_per_ip)"


class ImapService:
    def __init__(self, ctx: ServerContext, listen: str, implicit_tls: bool, name: str,
                 preauth: ConnectionCounter | RemotePlaces | None = None,
                 handoff: HandoffHub | HandoffWorker | None = None,
                 users: ConnectionCounter | RemoteUsers | None = None) -> None:
        self.ctx = ctx
        self.listen = listen
        self.implicit_tls = implicit_tls
        self.name = name
        self.server: asyncio.AbstractServer | TLSAfterAdmission | None = None
        #: (host, port) actually bound (port 0 in tests picks a free one)
        self.address: tuple[str, int] | None = None
        self.sessions: weakref.WeakSet[ImapSession] = weakref.WeakSet()
        #: logged-in connections per "account ip" (imap.max_connections_per_user_ip), shared by
        #: the imap and imaps listeners; with workers the first process's (handoff.py)
        self.users = users if users is not None else ConnectionCounter(ctx.config.imap.max_connections_per_user_ip)
        #: connections not logged in yet, per client IP (shared by the imap and imaps listeners)
        self.preauth = preauth or ConnectionCounter(ctx.config.imap.max_preauth_connections_per_ip)
        self._tls = None
        self._recorded: dict[int, float] = {}
        #: server.workers above 1 (handoff.py): the first process accepts for every process
        #: (HandoffHub), a worker serves what it is handed (HandoffWorker); either way a
        #: connection comes with its pre-login place taken by the first process
        self.handoff = handoff
        if isinstance(handoff, HandoffWorker):
            handoff.services[name] = self
        self._loop: asyncio.AbstractEventLoop | None = None
        self._make_protocol = None
        #: connections being set up (adopt): kept referenced until done
        self._adopting: set[asyncio.Task] = set()

    @property
    def tls_available(self) -> bool:
        try:
            self.tls_context()
            return True
        except StartupError:
            return False

    def tls_context(self):
        if self._tls is None:
            # implicit TLS (IMAPS) asks for an optional city certificate (AUTHENTICATE EXTERNAL)
            self._tls = self.ctx.tls_context(client_certificates=self.implicit_tls)
        return self._tls

    def should_record_login(self, account_id: int) -> bool:
        """The 'active users' figure needs a login time, not every login: one write per account
        per LOGIN_RECORD_INTERVAL (clients log in many times an hour)."""
        now = time.monotonic()
        last = self._recorded.get(account_id)
        if last is not None and now - last < LOGIN_RECORD_INTERVAL:
            return False
        self._recorded[account_id] = now
        if len(self._recorded) > 100_000:  # forget the oldest half rather than grow forever
            for key in sorted(self._recorded, key=self._recorded.get)[:50_000]:
                del self._recorded[key]
        return True

    # -- connection limits per user and client IP --------------------------------------------------
    async def admit(self, session: ImapSession, account_id: int) -> bool:
        key = f"{account_id} {session.peer_ip}"
        if isinstance(self.users, RemoteUsers):
            granted = await self.users.ask(key)
        else:
            granted = self.users.open(key)
        if granted:
            session._limit_key = key
        return granted

    def release(self, session: ImapSession) -> None:
        self.release_preauth(session)
        key = session._limit_key
        if key is not None:
            session._limit_key = None
            self.users.close(key)

    def readmit_preauth(self, session: ImapSession) -> bool:
        """UNAUTHENTICATE: the session goes back under imap.max_preauth_connections_per_ip (and
        gives back its place under the per-user bound); False, and nothing changed, if the
        address has no place left."""
        if not self.preauth.open(session.peer_ip):
            return False
        self.release(session)
        session.preauth_slot = True
        return True

    def release_preauth(self, session: ImapSession) -> None:
        if session.preauth_slot:
            session.preauth_slot = False
            self.preauth.close(session.peer_ip)

    def _refusal(self, ip: str) -> str | None:
        """The BYE text that refuses a new connection from ``ip``, or None: it is admitted (it
        then holds a place in the process's gate, and one under the per-address cap)."""
        if not self.ctx.gate.enter(self.name, ip):
            if self.handoff is not None:  # the place taken at accept goes back
                self.preauth.close(ip)
            return R.BYE_SERVER_BUSY
        if self.handoff is not None:  # its pre-login place was taken at accept (handoff.py)
            return None
        if not self.preauth.open(ip):
            self.ctx.gate.leave(self.name)
            self.ctx.gate.refusals.refused(self.name, ip, PREAUTH_REASON, per_address=True)
            return R.BYE_PREAUTH_TOO_MANY
        return None

    def _admit_before_tls(self, ip: str) -> bool:
        """imaps: the places are taken at TCP accept (admission.TLSAfterAdmission); a refusal
        closes the socket, as no TLS channel exists yet to carry a BYE."""
        return self._refusal(ip) is None

    def _release_before_tls(self, ip: str) -> None:
        self.preauth.close(ip)
        self.ctx.gate.leave(self.name)

    # -- hand-off mode (handoff.py) ----------------------------------------------------------------
    def take_place(self, conn, ip: str) -> bool:
        """The first process, at accept: a pre-login place for ``ip`` for the whole server, or a
        refusal (BYE on imap; on imaps the socket is closed, there is no TLS channel yet)."""
        if self.preauth.open(ip):
            return True
        self.ctx.gate.refusals.refused(self.name, ip, PREAUTH_REASON, per_address=True)
        if not self.implicit_tls:
            try:
                conn.send(f"* BYE {R.BYE_PREAUTH_TOO_MANY}\r\n".encode())
            except OSError:
                pass
        conn.close()
        return False

    def adopt(self, conn, ip: str) -> None:
        """Serve an accepted connection (non-blocking) whose pre-login place is taken: under this
        process's gate, then as ``create_server`` (imap) or ``TLSAfterAdmission`` (imaps) would."""
        if self.implicit_tls and not self._admit_gate_before_tls(ip):
            conn.close()
            return
        task = self._loop.create_task(self._adopt(conn, ip))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    def _admit_gate_before_tls(self, ip: str) -> bool:
        if self.ctx.gate.enter(self.name, ip):
            return True
        self.preauth.close(ip)
        return False

    async def _adopt(self, conn, ip: str) -> None:
        loop = self._loop
        try:
            if self.implicit_tls:
                await loop.connect_accepted_socket(self._make_protocol, conn, ssl=self.tls_context(),
                                                   ssl_handshake_timeout=self.ctx.config.server.tls_handshake_timeout)
            else:
                await loop.connect_accepted_socket(self._make_protocol, conn)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            # a timeout, a failed handshake, or the client went away: nothing was handed over
            conn.close()
            if self.implicit_tls:
                self._release_before_tls(ip)
            else:
                self.preauth.close(ip)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if peer else "?"
        refusal = None if self.implicit_tls else self._refusal(ip)  # imaps: admitted before TLS
        if refusal is not None:
            writer.write(f"* BYE {refusal}\r\n".encode())
            writer.close()
            return
        session = None
        try:
            session = ImapSession(self.ctx, self, reader, writer, tls_active=self.implicit_tls)
            session.preauth_slot = True  # from now on the session gives its place back (release)
            self.sessions.add(session)
            await session.run()
        except Exception:  # one session's failure never reaches another
            log.exception("IMAP session failed")
        finally:
            if session is None:
                self.preauth.close(ip)
            self.ctx.gate.leave(self.name)

    async def start(self) -> None:
        registry.load()  # every command registered before the first client, not on its first command
        # Every store call runs in a thread that releases the GIL at each SQLite statement and
        # socket send; with the default 5 ms switch interval it then waits behind the busy event
        # loop (or another store thread) for up to 5 ms per statement, which made a 1 ms write
        # take 10-40 ms of wall time. SMTP sets the same (smtp/service.py).
        sys.setswitchinterval(SWITCH_INTERVAL)
        host, port = parse_hostport(self.listen, f"{self.name}.listen")
        loop = self._loop = asyncio.get_running_loop()
        # the reader starts with the pre-login line bound; session.authenticated raises it
        limit = min(self.ctx.config.imap.max_line_length, self.ctx.config.imap.max_preauth_command_size) + 2

        def make_protocol() -> asyncio.Protocol:  # what asyncio.start_server makes per connection
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=limit, loop=loop), self._handle, loop=loop)

        self._make_protocol = make_protocol
        if isinstance(self.handoff, HandoffWorker):  # the first process listens and hands connections here
            self.ctx.outage.on_outage.append(self._on_outage)
            return
        try:
            # several processes listening on one port without a hand-off (serve hands over,
            # handoff.py): the kernel spreads the connections over them
            shared = self.ctx.config.server.workers != 1
            if isinstance(self.handoff, HandoffHub):
                self.server = await HandoffListener(self, self.handoff).listen(host, port, 4096)
            elif self.implicit_tls:  # places taken at TCP accept, the handshake after (admission.py)
                self.server = await TLSAfterAdmission(
                    self._admit_before_tls, self._release_before_tls, self.tls_context(),
                    self.ctx.config.server.tls_handshake_timeout, make_protocol).listen(host, port, 4096, shared or None)
            else:
                self.server = await loop.create_server(make_protocol, host, port, backlog=4096, reuse_port=shared or None)
        except OSError as exc:
            raise StartupError(f"{self.name}: cannot listen on {self.listen}: {exc.strerror}") from None
        self.address = self.server.sockets[0].getsockname()[:2]
        self.ctx.outage.on_outage.append(self._on_outage)
        log.info("%s listening on %s:%d", self.name, *self.address)

    def _on_outage(self) -> None:
        """An outage began (called in the failing thread): every session in IDLE looks at the store."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_idlers)

    def _wake_idlers(self) -> None:
        for session in list(self.sessions):
            if session.wake is not None:
                session.wake.set()

    async def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(ValueError):
            self.ctx.outage.on_outage.remove(self._on_outage)
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions):
            try:
                session.writer.write(session.wire(f"* BYE {R.BYE_SHUTDOWN}\r\n".encode()))
                session.writer.close()
            except Exception:  # already gone
                pass
        if self.server is not None:
            await self.server.wait_closed()


class WatcherService:
    """Runs the store's FolderWatcher for this process (cross-process updates)."""

    name = "imap-watcher"

    def __init__(self, ctx: ServerContext) -> None:
        self.watcher = FolderWatcher(ctx.store, ctx.hub, ctx.executor, outage=ctx.outage)
        ctx.metrics.watcher = self.watcher  # its LISTEN figures, read when scraped

    async def start(self) -> None:
        self.watcher.start()

    async def stop(self) -> None:
        await self.watcher.stop()


class TombstonePruner:
    """Prunes QRESYNC's expunge tombstones older than imap.expunge_history_days, hourly."""

    name = "imap-tombstone-pruner"
    INTERVAL = 3600.0
    FIRST = 30.0

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from ..store.tombstones import prune_tombstones

        await asyncio.sleep(self.FIRST)
        while True:
            cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=self.ctx.config.imap.expunge_history_days)
            try:
                folders, deleted = await self.ctx.run(prune_tombstones, self.ctx.store, cutoff)
                if deleted:
                    log.info("pruned %d expunge tombstones from before %s in %d folders", deleted,
                             cutoff.date().isoformat(), folders)
            except Exception:  # the next hour tries again; serving mail goes on
                log.exception("pruning expunge tombstones failed")
            await asyncio.sleep(self.INTERVAL)


def make_services(ctx: ServerContext, worker: bool = False) -> list:
    if ctx.config.external_store:
        if not worker:
            log.info('IMAP not started: store.mode = "external" (citizens read their mail from the external store; LMTP %s)',
                     ctx.config.lmtp.target)
        return []
    ctx.store.commits.on_commit = ctx.metrics.commit_observer("imap")
    ctx.store.commits.on_unsynced_commit = ctx.metrics.commit_observer("imap-unsynced")
    services: list = [WatcherService(ctx)]
    if ctx.config.imap.expunge_history_days > 0 and not worker:  # once per server, in the first process
        services.append(TombstonePruner(ctx))
    listeners = [(ctx.config.imap.listen, False, "imap"), (ctx.config.imaps.listen, True, "imaps")]
    return services + listener_services(ctx, [listener for listener in listeners if listener[0]])


def listener_services(ctx: ServerContext, listeners: list[tuple[str, bool, str]]) -> list:
    """The IMAP listeners ``(listen, implicit_tls, name)``, in the order to start them, with one
    per-address count of connections before login between them and, with ``ctx.handoff``
    (workers.py), the hand-off link in its place: the first process's hub before the listeners
    (started before them, stopped after), a worker's end after the listeners it hands to."""
    limit = ctx.config.imap.max_preauth_connections_per_ip
    preauth: ConnectionCounter | RemotePlaces = ConnectionCounter(limit)
    users: ConnectionCounter | RemoteUsers = ConnectionCounter(ctx.config.imap.max_connections_per_user_ip)
    handoff: HandoffHub | HandoffWorker | None = None
    before: list = []
    after: list = []
    role, channels = ctx.handoff or (None, None)
    if role == "accept":  # the first process of several: it accepts for them all
        handoff = HandoffHub(channels, preauth, lambda: ctx.stopping, ctx.respawn_worker, users, ctx.config.server)
        before.append(handoff)
    elif role == "work":
        handoff = HandoffWorker(channels)
        preauth = RemotePlaces(handoff, limit)
        users = RemoteUsers(handoff, ctx.config.imap.handoff_ask_timeout)
        after.append(handoff)
    return before + [ImapService(ctx, listen, tls, name, preauth, handoff, users)
                     for listen, tls, name in listeners] + after


def make_worker_services(ctx: ServerContext) -> list:
    """An IMAP worker process's services (workers.py): the listeners and the folder watcher."""
    return make_services(ctx, worker=True)

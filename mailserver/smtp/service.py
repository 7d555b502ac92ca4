"""The three SMTP listeners and the group-commit writer as services of `civicmail serve`.

``smtp.listen`` (inbound, port 25: local recipients only, no AUTH), ``submission.listen`` (587:
STARTTLS, then AUTH) and ``submissions.listen`` (465: implicit TLS). An empty ``listen`` turns a
listener off. Each listener exposes its bound ``address`` so tests can listen on port 0.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import sys
from typing import Callable

from ..admission import ConnectionCounter, TLSAfterAdmission
from ..config import parse_hostport
from ..server import ServerContext, StartupError
from . import replies
from .committer import GroupCommitter
from .handler import Handler
from .mailboxes import Mailbox, MailboxCache, find_mailbox
from .policy import RateLimiter
from .protocol import PER_IP_REASON, CivicSMTP

log = logging.getLogger("civicmail.smtp")

#: seconds a shutdown waits for transactions in flight before closing their connections
SHUTDOWN_GRACE = 30.0
#: seconds a thread may hold the GIL while another waits (Python's default is 0.005)
SWITCH_INTERVAL = 0.0005


class SMTPShared:
    """What the listeners of one process share: the writer, the caches and the limits."""

    def __init__(self, ctx: ServerContext) -> None:
        config = ctx.config
        self.ctx = ctx
        self.committer = GroupCommitter(ctx.store, ctx.run, config.accounts.quota_bytes,
                                        timeout=config.store.commit_timeout, outage=ctx.outage,
                                        on_commit=ctx.metrics.commit_observer("smtp"))
        self.mailbox_cache = MailboxCache()
        self.connections = ConnectionCounter(config.smtp.max_connections_per_ip)
        self.ip_rate = RateLimiter(config.smtp.max_messages_per_ip_per_minute)
        self.agency_rate = RateLimiter(config.submission.agency_rate_per_minute)
        #: called when mail was queued for other domains (set by the outbound service)
        self.outbound_wakeup: Callable[[], None] = lambda: None

    async def find_mailbox(self, address: str) -> Mailbox | None:
        hit, mailbox = self.mailbox_cache.get(address)
        if not hit:
            mailbox = await self.ctx.run_store(find_mailbox, self.ctx.store, address)
            self.mailbox_cache.put(address, mailbox)
        return mailbox


class CommitterService:
    """Started before the listeners and stopped after them, so every accepted DATA commits."""

    name = "smtp group commit"

    def __init__(self, shared: SMTPShared) -> None:
        self.shared = shared

    async def start(self) -> None:
        # The writer thread releases the GIL at every SQLite call and commit; with the default
        # 5 ms switch interval each of those waits behind the busy event loop, which made one
        # group commit of ~10 messages cost ~40 ms. Handing the GIL over sooner costs little.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.shared.committer.start()

    async def stop(self) -> None:
        await self.shared.committer.stop()
        c = self.shared.committer
        log.info("group commit: %d messages in %d commits", c.messages, c.commits)


class SMTPListener:
    def __init__(self, ctx: ServerContext, shared: SMTPShared, kind: str, listen: str) -> None:
        self.ctx, self.shared, self.kind, self.listen = ctx, shared, kind, listen
        self.name = f"{kind} listener"
        self.is_submission = kind in ("submission", "submissions")
        self.implicit_tls = kind == "submissions"
        self.starttls_context = None
        self.handler = Handler(self)
        self.sessions: set[CivicSMTP] = set()
        self.closing = False
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | TLSAfterAdmission | None = None

    def refusal(self, ip: str) -> str | None:
        """The reply refusing a new connection from ``ip``, or None: it holds a place in the
        gate and one under smtp.max_connections_per_ip until ``release``."""
        gate = self.ctx.gate
        if not gate.enter(self.kind, ip):
            return replies.SERVER_BUSY
        if not self.shared.connections.open(ip):
            gate.leave(self.kind)
            gate.refusals.refused(self.kind, ip, PER_IP_REASON, per_address=True)
            return replies.TOO_MANY_CONNECTIONS
        return None

    def admit_before_tls(self, ip: str) -> bool:
        """submissions: the places are taken at TCP accept, before the TLS handshake; a refusal
        closes the socket, as no TLS channel exists yet to carry a 421."""
        return self.refusal(ip) is None

    def release(self, ip: str) -> None:
        self.shared.connections.close(ip)
        self.ctx.gate.leave(self.kind)

    async def start(self) -> None:
        host, port = parse_hostport(self.listen, f"{self.kind}.listen")
        # StartupError (clear message) if the certificate is missing; implicit TLS (SMTPS) asks for
        # an optional city certificate (AUTH EXTERNAL)
        tls = self.ctx.tls_context(client_certificates=self.implicit_tls)
        if not self.implicit_tls:
            self.starttls_context = tls
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = functools.partial(CivicSMTP, self)
        try:
            if self.implicit_tls:  # places taken at TCP accept, the handshake after (admission.py)
                self._server = await TLSAfterAdmission(self.admit_before_tls, self.release, tls,
                                                       self.ctx.config.server.tls_handshake_timeout, factory).listen(host, port)
            else:
                self._server = await loop.create_server(factory, host, port, reuse_address=True)
        except OSError as exc:
            reason = {errno.EADDRINUSE: "address already in use",
                      errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE; "
                                    "see config/civicmail.service)",
                      errno.EADDRNOTAVAIL: "no such local address"}.get(exc.errno or 0, exc.strerror or str(exc))
            raise StartupError(f"{self.kind}.listen = {self.listen}: cannot listen: {reason}") from None
        self.address = self._server.sockets[0].getsockname()[:2]
        mode = {"smtp": "inbound, STARTTLS", "submission": "submission, STARTTLS then AUTH",
                "submissions": "submission, implicit TLS"}[self.kind]
        log.info("SMTP %s listening on %s:%d (%s)", self.kind, self.address[0], self.address[1], mode)

    async def stop(self) -> None:
        """Stop accepting; let transactions in flight finish (up to SHUTDOWN_GRACE); close."""
        self.closing = True
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.sessions:
            for session in list(self.sessions):
                if not session.in_transaction or loop.time() > deadline:
                    session.close_now(replies.SHUTTING_DOWN)
                    self.sessions.discard(session)
            if self.sessions:
                await asyncio.sleep(0.05)
        await self._server.wait_closed()
        log.info("SMTP %s stopped", self.kind)


def make_services(ctx: ServerContext) -> list:
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-command chatter
    shared = SMTPShared(ctx)
    services: list = [CommitterService(shared)]
    for kind in ("smtp", "submission", "submissions"):
        listen = getattr(ctx.config, kind).listen
        if listen:
            services.append(SMTPListener(ctx, shared, kind, listen))
    from ..outbound.runner import OutboundService

    services.append(OutboundService(ctx, shared))
    return services

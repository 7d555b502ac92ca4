"""The outbound queue runner, a service of `civicmail serve`: takes due entries, signs them,
hands them to the relay, and retries with exponential backoff; after the last attempt (or at
once on a permanent refusal) the sender gets a DSN in their INBOX."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy import select

from ..errors import ConfigError
from ..server import ServerContext, StartupError
from ..identity.addresses import normalise_domain
from ..store.external import Outgoing, open_external
from ..store.models import Account
from ..timeouts import within
from . import queue, relay
from .dsn import build_dsn
from .signing import DkimSigner

log = logging.getLogger("civicmail.outbound")

#: seconds between looks at the queue when nothing wakes the runner
POLL_SECONDS = 30.0
#: the same in external mode, where the services' replies and bulletins to mailboxes are queued
EXTERNAL_POLL_SECONDS = 1.0
#: entries claimed at once (each attempted in turn; their leases renewed meanwhile)
CLAIM_LIMIT = 20


def retry_delay(base_seconds: int, attempts: int) -> dt.timedelta:
    """Wait before attempt ``attempts + 1``: base, 2 x base, 4 x base, ... (capped at a day)."""
    return dt.timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), 86400))


class OutboundRunner:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.signer = DkimSigner.load(config.data_path(config.dkim.key), config.dkim.selector, config.city.domain,
                                      config.local_domains)
        #: external mode (store.mode = "external"): mail for the city's own mailboxes is queued too
        #: (store/external.py divert) and goes to the external store by LMTP, unsigned
        self.lmtp = open_external(config)

    def close(self) -> None:
        if self.lmtp is not None:
            self.lmtp.close()

    async def run_once(self) -> int:
        """One pass over the due entries; returns how many were attempted. Without a relay
        (``outbound.relay`` empty) mail for other domains waits: no attempt is spent on it,
        nothing bounces."""
        if not self.ctx.config.outbound.relay and self.lmtp is None:
            return 0
        lease = self.ctx.config.outbound.lease_seconds
        claimed = await self.ctx.run(queue.claim_due, self.ctx.store, CLAIM_LIMIT, lease)
        if not claimed:
            return 0
        pending = [entry.id for entry in claimed]
        heartbeat = asyncio.create_task(self._heartbeat(pending, lease), name="outbound-lease")
        try:
            # external mode: the city's mailboxes of every claimed entry in one call, spread over
            # lmtp.connections sessions (one entry after the other would use one)
            delivered = await self._lmtp_all(claimed)
            for entry in claimed:
                await self.attempt(entry, delivered.get(entry.id))
                pending.remove(entry.id)
        finally:
            heartbeat.cancel()
        return len(claimed)

    async def _heartbeat(self, pending: list[int], lease: float) -> None:
        """Renew the lease of the claimed entries not yet attempted to the end, every third of
        it, while the attempts run: a slow relay never lets another node take them."""
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.ctx.run(queue.renew, self.ctx.store, list(pending), lease)
            except Exception as exc:  # the store away: the next beat tries again
                log.warning("outbound queue: leases not renewed: %s", exc.__class__.__name__)

    async def _lmtp_all(self, claimed: list[queue.Claimed]) -> dict[int, dict]:
        """Entry id -> its LMTP replies (recipient -> Reply), for the entries with city mailboxes."""
        if self.lmtp is None:
            return {}
        todo = [(entry, mailboxes) for entry in claimed if (mailboxes := self._split(entry.recipients)[0])]
        if not todo:
            return {}
        replies = await self.ctx.run(self.lmtp.deliver, [Outgoing(e.sender, tuple(m), e.raw) for e, m in todo])
        return {entry.id: r for (entry, _), r in zip(todo, replies)}

    async def attempt(self, entry: queue.Claimed, lmtp_replies: dict | None = None) -> None:
        """One attempt at an entry: its city mailboxes by LMTP (external mode; ``lmtp_replies``
        if already sent), the rest through the relay."""
        config = self.ctx.config
        mailboxes, remote = self._split(entry.recipients)
        result = relay.AttemptResult()
        if mailboxes:
            replies = lmtp_replies if lmtp_replies is not None else (await self.ctx.run(
                self.lmtp.deliver, [Outgoing(entry.sender, tuple(mailboxes), entry.raw)]))[0]
            for recipient, reply in replies.items():
                if reply.ok:
                    result.accepted.append(recipient)
                else:
                    (result.permanent if reply.permanent else result.temporary)[recipient] = str(reply)
        if remote and config.outbound.relay:
            signed = await self.ctx.run(self.signer.sign, entry.raw, entry.sender)
            sent = await self.ctx.run(relay.send, config.outbound, config.server.hostname, entry.sender, remote, signed)
            result.accepted += sent.accepted
            result.temporary.update(sent.temporary)
            result.permanent.update(sent.permanent)
        elif remote:  # no relay: it waits, and no attempt is spent on it
            result.temporary.update({r: "451 4.4.0 no relay configured (outbound.relay)" for r in remote})
        attempts = entry.attempts + (1 if mailboxes or config.outbound.relay else 0)
        if result.permanent:
            await self.ctx.run(self.bounce, entry, result.permanent, True)
        metrics = self.ctx.metrics
        if not result.temporary:
            await self.ctx.run(queue.delivered, self.ctx.store, entry.id)
            outcome = "sent" if not result.permanent else "partly bounced"
            metrics.outbound_attempts.labels("sent" if not result.permanent else "bounced").inc()
            if not result.permanent and entry.created_at is not None:
                metrics.outbound_seconds.observe(queue.age_seconds(entry.created_at, queue.now()))
        elif attempts >= config.outbound.max_attempts:
            await self.ctx.run(self.bounce, entry, result.temporary, False)
            await self.ctx.run(queue.bounced, self.ctx.store, entry.id, attempts,
                               "; ".join(sorted(set(result.temporary.values()))))
            outcome = "bounced"
            metrics.outbound_attempts.labels("bounced").inc()
        else:
            retry_at = queue.now() + retry_delay(config.outbound.retry_base_seconds, attempts)
            await self.ctx.run(queue.deferred, self.ctx.store, entry.id, sorted(result.temporary), attempts, retry_at,
                               "; ".join(sorted(set(result.temporary.values()))))
            outcome = f"deferred (retry at {retry_at:%Y-%m-%d %H:%M:%S}Z)"
            metrics.outbound_attempts.labels("deferred").inc()
        log.info("Q%d %s relay=%s from=<%s> to=%s attempt=%d size=%d", entry.id, outcome,
                 config.outbound.relay or "-", entry.sender, ",".join(f"<{r}>" for r in entry.recipients),
                 attempts, len(entry.raw))

    def _split(self, recipients: list[str]) -> tuple[list[str], list[str]]:
        """(the city's own mailboxes, for LMTP in external mode; the rest, for the relay)."""
        if self.lmtp is None:
            return [], list(recipients)
        local = self.ctx.config.local_domains
        mine = [r for r in recipients if normalise_domain(r.rpartition("@")[2]) in local]
        return mine, [r for r in recipients if r not in mine]

    def bounce(self, entry: queue.Claimed, failures: dict[str, str], permanent: bool) -> None:
        """Blocking: deliver a DSN into the sender's INBOX (if the sender has a mailbox here)."""
        store, config = self.ctx.store, self.ctx.config
        account_id = entry.account_id
        if account_id is None:
            with store.reader() as s:
                account_id = s.scalar(select(Account.id).where(Account.address == entry.sender.lower()))
        if account_id is None or not entry.sender:
            log.warning("Q%d bounce dropped: sender <%s> has no mailbox here", entry.id, entry.sender)
            return
        dsn = build_dsn(hostname=config.server.hostname, domain=config.city.domain, sender=entry.sender,
                        original=entry.raw, failures=failures, permanent=permanent)
        store.mail.deliver(dsn, [account_id])


class OutboundService:
    name = "outbound queue"

    def __init__(self, ctx: ServerContext, shared=None) -> None:
        self.ctx = ctx
        self.shared = shared
        self.runner: OutboundRunner | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        try:
            self.runner = OutboundRunner(self.ctx)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if self.shared is not None:
            self.shared.outbound_wakeup = self.wake
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="outbound-queue")
        log.info("outbound queue running (relay %s)%s", self.ctx.config.outbound.relay or "not configured: mail waits",
                 f"; the city's mailboxes by LMTP to {self.ctx.config.lmtp.target}" if self.runner.lmtp else "")

    async def _loop(self) -> None:
        assert self.runner is not None
        while not self._stopping:
            try:
                if await self.runner.run_once():
                    continue  # a backlog: keep going until nothing is due
            except Exception:  # the store may be briefly unavailable; try again next round
                log.exception("outbound queue pass failed")
            try:
                # external mode: the services' mail for mailboxes waits here too (no wake-up call)
                await within(self._wake.wait(), EXTERNAL_POLL_SECONDS if self.runner.lmtp else POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def stop(self) -> None:
        """Let the attempt in flight finish; entries not yet attempted stay queued."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self.runner is not None:
            await self.ctx.run(self.runner.close)

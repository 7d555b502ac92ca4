"""aiosmtpd's SMTP protocol with our per-connection policy: TLS-before-AUTH decided by the
client's address, per-IP connection limits, our reply texts, and sessions a listener can see
(for a clean shutdown)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from . import replies
from .policy import auth_requires_tls

if TYPE_CHECKING:
    from .service import SMTPListener


class CivicSession(Session):
    @property
    def client_ip(self) -> str:
        peer = self.peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class CivicEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        #: queue id of this transaction (in replies and log lines)
        self.qid = ""
        #: local recipient address -> account id
        self.local: dict[str, int] = {}
        #: recipients in other domains (authenticated citizens only)
        self.remote: list[str] = []


class CivicSMTP(SMTP):
    def __init__(self, listener: "SMTPListener") -> None:
        config = listener.ctx.config
        self.listener = listener
        # aiosmtpd sizes its stream reader from this attribute; +1 for a stuffed dot.
        self.line_length_limit = config.smtp.max_line_length + 1
        super().__init__(
            listener.handler,
            data_size_limit=config.smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=config.server.hostname,
            ident="ESMTP civicmail",
            tls_context=listener.starttls_context,
            auth_required=listener.is_submission,
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )
        self._counted_ip: str | None = None

    def _create_session(self) -> CivicSession:
        return CivicSession(self.loop)

    def _create_envelope(self) -> CivicEnvelope:
        return CivicEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(self.session, CivicSession)
        self._auth_require_tls = auth_requires_tls(implicit_tls=self.listener.implicit_tls,
                                                   development=self.listener.ctx.config.server.development,
                                                   client_ip=self.session.client_ip)

    @property
    def in_transaction(self) -> bool:
        return bool(self.envelope is not None and self.envelope.mail_from)

    @property
    def tls_active(self) -> bool:
        return self.listener.implicit_tls or self._tls_protocol is not None

    async def push(self, status: AnyStr) -> None:
        await super().push(replies.normalize(status) if isinstance(status, str) else status)

    async def _handle_client(self) -> None:
        assert isinstance(self.session, CivicSession)
        ip = self.session.client_ip
        if not self.listener.shared.connections.open(ip):
            await self.push(replies.TOO_MANY_CONNECTIONS)
            assert self.transport is not None
            self.transport.close()
            return
        self.listener.sessions.add(self)
        try:
            await super()._handle_client()
        finally:
            self.listener.shared.connections.close(ip)
            self.listener.sessions.discard(self)

    def close_now(self, reply: str) -> None:
        """Say goodbye without waiting (shutdown of an idle session)."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(reply.encode() + b"\r\n")
            self.transport.close()

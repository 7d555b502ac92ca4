"""aiosmtpd's SMTP protocol with our per-connection policy: TLS-before-AUTH decided by the
client's address, per-IP connection limits, our reply texts, and sessions a listener can see
(for a clean shutdown)."""
from __future__ import annotations

import asyncio
import functools
import re
from typing import TYPE_CHECKING, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from ..identity.sasl import BEARER_MECHANISMS
from . import replies
from .policy import auth_requires_tls

if TYPE_CHECKING:
    from .service import SMTPListener


#: an angle-bracketed dot-atom address (what nearly every client sends), then the parameters
_PLAIN_ADDRESS = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(\s.*)?$", re.ASCII | re.DOTALL)


_END_OF_DATA = b"\r\n.\r\n"
#: replies that are never held back for a pipelined group (see CivicSMTP.push)
_NEVER_HOLD = frozenset((b"220", b"221", b"334", b"354", b"421"))
#: the log's reason for a refusal by smtp.max_connections_per_ip
PER_IP_REASON = "too many connections from this address (smtp.max_connections_per_ip)"


def line_too_long(stream: bytes, limit: int) -> bool:
    """Has a DATA stream (CRLF-separated, still dot-stuffed) a text line longer than ``limit``
    octets? RFC 5321 4.5.3.1.6 counts the CRLF and not a dot added for transparency, so with
    1000, 998 octets + CRLF pass, 999 do not, unless the line begins with a stuffed dot. The dots
    are looked at only for lines at exactly that edge."""
    lines = stream.split(b"\r\n")
    longest = max(map(len, lines))
    if longest + 2 <= limit:
        return False
    if longest + 1 > limit:
        return True
    return any(len(line) == longest and line[:1] != b"." for line in lines)


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
        #: the longest text line in DATA, octets with its CRLF
        self.max_line_length = config.smtp.max_line_length
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
            # the bearer-token mechanisms only while the OpenID Connect provider is on
            auth_exclude_mechanism=() if config.oidc.enabled else BEARER_MECHANISMS,
            loop=asyncio.get_running_loop(),
        )
        self._held: list[bytes] = []
        #: the verb being answered, for the metrics ("none" between commands; see _counting)
        self._verb = "none"
        metrics = listener.ctx.metrics
        self._replies = metrics.smtp_replies
        self._commands = metrics.smtp_commands

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
        """Our reply texts; and with PIPELINING, the replies to a group of commands go out in
        one write: while the client's next command is already waiting in the buffer, the
        reply is held (never for replies after which the client must wait or we switch or
        close: 220, 221, 334, 354, 421)."""
        if isinstance(status, str):
            status = replies.normalize(status)
            data = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        else:
            data = status
        if data[3:4] != b"-":  # the last line of a reply
            self._replies.labels(self.listener.kind, self._verb, data[:3].decode("ascii", "replace")).inc()
        self._held.append(data + b"\r\n")
        buffered = self._reader._buffer  # type: ignore[attr-defined]
        if b"\n" in buffered and data[:3] not in _NEVER_HOLD:
            return
        self._writer.write(b"".join(self._held))
        self._held.clear()
        await self._writer.drain()

    async def _handle_client(self) -> None:
        assert isinstance(self.session, CivicSession)
        ip = self.session.client_ip
        listener = self.listener
        # submissions took its places at TCP accept, before the handshake (admission.TLSAfterAdmission)
        refusal = None if listener.implicit_tls else listener.refusal(ip)
        if refusal is not None:
            await self._refuse(refusal)
            return
        listener.sessions.add(self)
        try:
            await super()._handle_client()
        finally:
            listener.sessions.discard(self)
            listener.release(ip)

    async def _refuse(self, reply: str) -> None:
        await self.push(reply)
        assert self.transport is not None
        self.transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """A plain ``<local@domain> PARAMS`` without a parse by the email package (which costs
        more than the rest of MAIL or RCPT); anything else goes to aiosmtpd's parser."""
        m = _PLAIN_ADDRESS.match(arg)
        if m:
            return m.group(1), (m.group(2) or "").strip()
        return super()._getaddr(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA read with one ``readuntil(CRLF.CRLF)`` instead of aiosmtpd's one per line (the
        hot path of ingest). Same replies and limits as aiosmtpd's."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.DATA_NEEDS_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        await self.push(replies.DATA_GO_AHEAD)
        data, too_much = await self._read_data(self.data_size_limit or 0)
        if too_much:
            await self.push(replies.MESSAGE_TOO_BIG)
            self._set_post_data_state()
            return
        body = data[2:-3]  # without our leading CRLF and the ".\r\n" of the terminator
        if body and line_too_long(body, self.max_line_length):
            await self.push(replies.LINE_TOO_LONG)
            self._set_post_data_state()
            return
        # De-transparency (RFC 5321 4.5.2): drop the first dot of every line that starts with
        # one; the leading CRLF makes the first line no exception.
        content = data[:-3].replace(b"\r\n.", b"\r\n")[2:]
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(replies.OK if status is MISSING else status)

    async def _read_data(self, limit: int) -> tuple[bytes, bool]:
        """The DATA stream up to and including CRLF.CRLF, prefixed with the CRLF that ended the
        DATA command (so a message that is only ".\r\n" ends the same way), and whether it
        exceeded ``limit`` (then its bytes were discarded as they came)."""
        reader = self._reader
        saved_limit = reader._limit  # type: ignore[attr-defined]
        # room for the largest message at once; beyond that, LimitOverrunError and discard
        reader._limit = (limit or 1 << 26) + 1024  # type: ignore[attr-defined]
        data = bytearray(b"\r\n")
        too_much = False
        try:
            while not data.endswith(_END_OF_DATA):
                if any(data.endswith(_END_OF_DATA[:k]) for k in (4, 3, 2, 1)):
                    # A terminator may have begun in what we hold: go on byte by byte until
                    # it is complete or cannot be, so that readuntil never misses one.
                    data += await reader.readexactly(1)
                    continue
                try:
                    data += await reader.readuntil(_END_OF_DATA)
                except asyncio.LimitOverrunError as exc:
                    data += await reader.read(exc.consumed)
                    too_much = True
                if limit and len(data) > limit + 7:
                    too_much = True
                if too_much:
                    del data[:-len(_END_OF_DATA)]  # keep only what can still be (part of) the terminator
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
        return bytes(data), too_much

    def close_now(self, reply: str) -> None:
        """Say goodbye without waiting (shutdown of an idle session)."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"".join(self._held) + reply.encode() + b"\r\n")
            self._held.clear()
            self.transport.close()


def _counting(name: str, method):
    """``smtp_VERB`` counted in the metrics, its replies labelled with VERB. Wrapped once per
    class (below), so a connection costs nothing more; HELP reads the syntax aiosmtpd's
    @syntax put on the method, which ``wraps`` keeps."""
    verb = name[len("smtp_"):]

    @functools.wraps(method)
    async def counted(self: CivicSMTP, arg: str) -> None:
        self._commands.labels(self.listener.kind, verb).inc()
        self._verb = verb
        try:
            await method(self, arg)
        finally:
            self._verb = "none"
    return counted


for _name in [n for n in dir(CivicSMTP) if n.startswith("smtp_")]:
    setattr(CivicSMTP, _name, _counting(_name, getattr(CivicSMTP, _name)))

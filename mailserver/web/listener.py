"""One aiohttp application on one address, behind the process's connection gate.

aiohttp's own sites would accept every connection; here the listen socket is ours
(``loop.create_server``) and each connection's protocol asks ``ServerContext.gate`` first:
admitted, it is aiohttp's request handler; refused, it is ``_Refusal``, which reads the request
head (briefly) and answers 503, as the SMTP (421) and IMAP (* BYE) listeners refuse theirs.

Bounds: a request line or header field of at most http.max_header_size bytes and 64 fields (400
past them), a body of at most http.max_body_size (413), and http.request_timeout seconds for a
client to send a request, or to stay idle between two (aiohttp's keep-alive timer runs from the
connection's start, so a client that never completes its head is closed too); the handlers run
under the same timeout (middleware.py).
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..config import parse_hostport
from ..server import ServerContext, StartupError
from ..services.http import page
from .middleware import SECURITY_HEADERS, SERVER, html

log = logging.getLogger("civicmail.web")

#: header fields in one request (aiohttp's default is 128)
MAX_HEADERS = 64
#: seconds a stopping listener gives the requests in flight
SHUTDOWN_GRACE = 5.0
#: a connection refused by the gate has its request head read (for up to REFUSE_WAIT seconds)
#: before the 503, since closing with a request unread resets the connection and the client
#: never sees the 503; at most REFUSE_LINGER such at once, the others are answered at once
REFUSE_WAIT = 0.5
REFUSE_LINGER = 32
#: the most of a refused request's head kept while waiting for its end
REFUSE_HEAD = 8192

_BUSY_BODY = page(503).encode()
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: %d\r\nRetry-After: 5\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        % len(_BUSY_BODY)) + _BUSY_BODY


class WebListener:
    """A service of `serve`: ``app`` served on ``listen`` (``key`` names it in errors)."""

    def __init__(self, ctx: ServerContext, name: str, gate_name: str, key: str, listen: str,
                 make_app: Callable[[ServerContext], web.Application]) -> None:
        self.ctx = ctx
        self.name = name
        #: the listener's name in the gate, its log lines and the metrics
        self.gate_name = gate_name
        self.key = key
        self.listen = listen
        self.make_app = make_app
        self.address: tuple[str, int] | None = None
        self.runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        #: refused connections waiting for their request head (REFUSE_LINGER)
        self.lingering = 0

    async def start(self) -> None:
        http = self.ctx.config.http
        host, port = parse_hostport(self.listen, self.key)
        tls = self.ctx.tls_context() if http.tls else None  # StartupError if the certificate is missing
        #: each connection's request handler is made with these (_Gated)
        self.handler_args = dict(access_log=None, keepalive_timeout=http.request_timeout,
                                 max_line_size=http.max_header_size, max_field_size=http.max_header_size,
                                 max_headers=MAX_HEADERS)
        self.runner = web.AppRunner(self.make_app(self.ctx), shutdown_timeout=SHUTDOWN_GRACE, **self.handler_args)
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        try:
            # several `serve` processes serve the citizens' port (workers.py): the kernel spreads
            # new connections over them
            shared = self.ctx.config.server.workers != 1 and self.gate_name == "http"
            self._server = await loop.create_server(lambda: _Gated(self), host, port, ssl=tls, reuse_address=True,
                                                    reuse_port=shared or None)
        except OSError as exc:
            await self.runner.cleanup()
            reason = {errno.EADDRINUSE: "address already in use",
                      errno.EADDRNOTAVAIL: "no such local address"}.get(exc.errno or 0, exc.strerror or str(exc))
            raise StartupError(f"{self.key} = {self.listen}: cannot listen: {reason}") from None
        self.address = self._server.sockets[0].getsockname()[:2]
        log.info("%s listening on %s:%d%s", self.name, self.address[0], self.address[1], " (TLS)" if tls else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.runner is not None:
            await self.runner.cleanup()  # lets requests in flight finish, closes idle connections
        if self._server is not None:
            await self._server.wait_closed()


class _Gated(asyncio.Protocol):
    """A connection: aiohttp's request handler if the gate admits it, else a 503."""

    __slots__ = ("listener", "inner", "admitted")

    def __init__(self, listener: WebListener) -> None:
        self.listener = listener
        self.inner: asyncio.Protocol | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        gate = listener.ctx.gate
        server = listener.runner.server if listener.runner is not None else None
        if gate.enter(listener.gate_name, ip):
            if server is not None:
                self.admitted = True
                self.inner = _Handler(server, loop=asyncio.get_running_loop(), **listener.handler_args)
            else:  # stopping: nothing left to serve it
                gate.leave(listener.gate_name)
        if self.inner is None:
            self.inner = _Refusal(listener)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self.inner is not None
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        assert self.inner is not None
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        assert self.inner is not None
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self.inner is not None:
                self.inner.connection_lost(exc)
        finally:
            if self.admitted:
                self.admitted = False
                self.listener.ctx.gate.leave(self.listener.gate_name)


class _Handler(RequestHandler):
    """aiohttp's request handler (what ``Server()`` makes), answering a request it cannot parse
    our way: our short page and one debug line, where aiohttp's page quotes the client's bytes and
    its log takes a traceback per bad request (a client could fill the log with them)."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        log.debug("HTTP %d for a bad request from %s: %s", status, request.remote, exc.__class__.__name__)
        if request.writer.output_size > 0:  # a response has begun: nothing else can be said
            raise ConnectionError("the response had begun")
        response = html(503 if status >= 500 else status)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class _Refusal(asyncio.Protocol):
    """Reads a refused request's head (up to REFUSE_WAIT seconds), answers 503, closes."""

    def __init__(self, listener: WebListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.listener.lingering < REFUSE_LINGER:
            self.listener.lingering += 1
            self.waiting = True
            self.timer = asyncio.get_running_loop().call_later(REFUSE_WAIT, self._answer)
        else:
            self._answer()

    def data_received(self, data: bytes) -> None:
        self.head += data[:REFUSE_HEAD]
        if b"\r\n\r\n" in self.head or len(self.head) >= REFUSE_HEAD:
            self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return True  # the 503 is still written; _answer closes

    def _done_waiting(self) -> None:
        if self.waiting:
            self.waiting = False
            self.listener.lingering -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _answer(self) -> None:
        self._done_waiting()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(BUSY)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_waiting()
        self.transport = None

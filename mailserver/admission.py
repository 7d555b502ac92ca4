"""Admission of client connections: one mechanism for every listener (SMTP, IMAP, HTTP).

Every client connection costs a file descriptor, and the process has RLIMIT_NOFILE of them for
everything: the clients of every listener, the store (SQLite: the database, its WAL and its
shared-memory file for each pooled connection; PostgreSQL: a socket each), spool files, the
pipeline's worker pipes, outbound SMTP, the log. When ``accept()`` meets EMFILE, asyncio logs
"Too many open files" and pauses that listener, and the store fails wherever it opens a file.
So ``ConnectionGate`` (one per process: ``ServerContext.gate``) admits at most ``limit`` client
connections at once: the soft file limit less a reserve (FD_RESERVE, or a quarter of a small
limit), or ``server.max_connections`` when that is lower. A listener asks ``enter`` before it
serves a connection, refuses with its protocol's short reply when the answer is False (and
closes), and calls ``leave`` when the connection ends; the listener itself never stops.

On an implicit-TLS port (IMAPS, SMTPS) a connection is admitted at TCP accept, before its TLS
handshake: ``TLSAfterAdmission`` listens in clear, asks the listener's ``admit`` when the
transport is made (a refusal closes the socket at once: there is no channel yet for a reply),
then runs the handshake with ``loop.start_tls`` within ``server.tls_handshake_timeout`` and only
then hands the TLS transport to the listener's own protocol. So a flood of TCP connections that
never send a ClientHello holds places in the gate, is refused past the cap, and is closed when
the timeout ends, instead of holding file descriptors the gate never saw.

Refusals come in bursts (a flood, a client looping on reconnect): ``RefusalLog`` logs the first
refusal of a burst at once, then one line per REFUSAL_LOG_INTERVAL for as long as it goes on
("refused N more connections ... in the last 60 s"), never a line per connection.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("civicmail.admission")

#: file descriptors kept back from client connections for everything else (see the module text;
#: an idle `serve` holds about 40, a busy one on SQLite up to ~110 for the store's pool)
FD_RESERVE = 256
#: seconds between the summary lines of one burst of refusals
REFUSAL_LOG_INTERVAL = 60.0
#: bursts tracked one address at a time; past that, refusals are summed per listener and reason
MAX_BURSTS = 1000
#: distinct addresses counted in one summary (beyond: "N+ addresses")
MAX_ADDRESSES = 1000


def connection_limit(configured: int, file_limit: int) -> int:
    """Client connections the process may hold: the soft file limit less the reserve, lowered
    to ``configured`` when that is set (> 0) and lower. At least 1."""
    if file_limit < 0:  # RLIM_INFINITY: only the configured value bounds it
        derived = configured if configured > 0 else 1 << 20
    else:
        derived = file_limit - min(FD_RESERVE, file_limit // 4)
    if configured > 0:
        derived = min(derived, configured)
    return max(derived, 1)


@dataclass
class _Burst:
    #: refusals since the last line written
    count: int = 0
    addresses: set[str] = field(default_factory=set)


class RefusalLog:
    """One log line per burst of refusals, then a summary per ``interval`` while it lasts."""

    def __init__(self, logger: logging.Logger = log, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._bursts: dict[tuple[str, str, str], _Burst] = {}
        #: refusals since start by (listener, "busy" or "per_address"), for the metrics
        self.counts: Counter[tuple[str, str]] = Counter()

    def refused(self, listener: str, ip: str, reason: str, per_address: bool) -> None:
        """A connection from ``ip`` was refused. ``per_address``: the reason is this address's
        own (a per-IP cap), so its bursts are told apart from other addresses'."""
        self.counts[(listener, "per_address" if per_address else "busy")] += 1
        key = (listener, reason, ip if per_address else "")
        if per_address and key not in self._bursts and len(self._bursts) >= MAX_BURSTS:
            key = (listener, reason, "")  # many addresses at once: one summary for all of them
        burst = self._bursts.get(key)
        if burst is None:
            self._bursts[key] = _Burst()
            self.logger.warning("%s: refused a connection from %s: %s (further refusals are summarised every %g s)",
                                listener, ip, reason, self.interval)
            asyncio.get_running_loop().call_later(self.interval, self._summarise, key)
            return
        burst.count += 1
        if len(burst.addresses) < MAX_ADDRESSES:
            burst.addresses.add(ip)

    def _summarise(self, key: tuple[str, str, str]) -> None:
        burst = self._bursts[key]
        if not burst.count:  # the burst is over; the next refusal starts a new one
            del self._bursts[key]
            return
        listener, reason, ip = key
        n = len(burst.addresses)
        source = ip or (f"{n}+ addresses" if n >= MAX_ADDRESSES else f"{n} address{'es' if n > 1 else ''}")
        self.logger.warning("%s: refused %d more connections from %s in the last %g s: %s",
                            listener, burst.count, source, self.interval, reason)
        self._bursts[key] = _Burst()
        asyncio.get_running_loop().call_later(self.interval, self._summarise, key)


class ConnectionCounter:
    """Open connections per client IP, up to ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, ip: str) -> bool:
        n = self._open.get(ip, 0)
        if n >= self.limit:
            return False
        self._open[ip] = n + 1
        return True

    def add(self, ip: str) -> None:
        """Count a connection whose place was granted elsewhere (imap/handoff.py), past the limit if need be."""
        self._open[ip] = self._open.get(ip, 0) + 1

    def close(self, ip: str) -> None:
        n = self._open.get(ip, 0) - 1
        if n > 0:
            self._open[ip] = n
        else:
            self._open.pop(ip, None)


class ConnectionGate:
    """Client connections open at once over every listener of the process, up to ``limit``."""

    def __init__(self, configured: int = 0, file_limit: int | None = None,
                 refusals: RefusalLog | None = None) -> None:
        self.file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if file_limit is None else file_limit
        self.limit = connection_limit(configured, self.file_limit)
        self.open = 0
        #: per listener: connections accepted since start (refused ones included), open now
        self.accepted: Counter[str] = Counter()
        self.open_by: Counter[str] = Counter()
        self.refusals = refusals or RefusalLog()
        self.reason = f"at the limit of {self.limit} client connections (server.max_connections)"

    def describe(self) -> str:
        return f"accepting at most {self.limit} client connections (open file limit {self.file_limit})"

    def enter(self, listener: str, ip: str) -> bool:
        """Take a place for a new connection; False (logged as a refusal) when none is left.
        Every True is paired with one ``leave(listener)``."""
        self.accepted[listener] += 1
        if self.open >= self.limit:
            self.refusals.refused(listener, ip, self.reason, per_address=False)
            return False
        self.open += 1
        self.open_by[listener] += 1
        return True

    def leave(self, listener: str) -> None:
        self.open -= 1
        self.open_by[listener] -= 1


class AcceptingListener:
    """A listener that accepts for itself (its own listening sockets, read by the loop) and gives
    each accepted connection, non-blocking, to ``accepted(conn, ip)``. It offers what the
    listeners use of ``asyncio.Server``: ``sockets``, ``get_loop``, ``close`` and ``wait_closed``."""

    #: connections taken per wake-up of the listening socket (the rest at the next)
    ACCEPT_BATCH = 64

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def listen(self, host: str, port: int, backlog: int = 100, reuse_port: bool | None = None):
        """Bind and listen on every address HOST:PORT resolves to (a name with IPv4 and IPv6
        addresses gets both, as ``create_server`` binds them; OSError as it raises it), and accept."""
        self._loop = asyncio.get_running_loop()
        addresses = dict.fromkeys((family, address) for family, *_, address in await self._loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
        try:
            for family, address in addresses:
                sock = socket.create_server(address, family=family, backlog=backlog, reuse_port=bool(reuse_port))
                sock.setblocking(False)
                self.sockets.append(sock)
                self._loop.add_reader(sock.fileno(), self._accept, sock)
        except OSError:
            self.close()
            raise
        return self

    def get_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self.ACCEPT_BATCH):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the gate's reserve is meant to prevent it
                log.warning("accept on %s failed: %s", sock.getsockname(), exc.strerror or exc)
                return
            conn.setblocking(False)
            self.accepted(conn, str(peer[0]) if peer else "?")

    def accepted(self, conn: socket.socket, ip: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting (connections being set up go on, as asyncio.Server's do)."""
        for sock in self.sockets:
            if sock.fileno() >= 0:
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.remove_reader(sock.fileno())
                sock.close()

    async def wait_closed(self) -> None:
        return None


class TLSAfterAdmission(AcceptingListener):
    """An implicit-TLS listener (see the module text): its own listening socket, whose
    connections are admitted at TCP accept and only then handed to the loop for the handshake.

    ``admit(ip)`` takes the connection's places (the gate, a per-address cap) or refuses (the
    socket is closed at once); ``release(ip)`` gives them back when the handshake fails or times
    out. Once the handshake is done the places belong to the protocol that ``make_protocol()``
    returns, which serves the connection as if the listener had been opened with ``ssl=`` and
    releases them as it does for every connection it admitted itself.

    The handshake runs through ``loop.connect_accepted_socket(ssl=...)``, so the TLS layer reads
    the socket from its first byte. (An earlier version took a clear transport from
    ``create_server`` and called ``start_tls`` from a task: a ClientHello read in between went to
    the clear protocol and the handshake then waited for one until its timeout. uvloop, which
    starts reading a new transport at once, lost that race about one connection in five.)"""

    def __init__(self, admit: Callable[[str], bool], release: Callable[[str], None],
                 context: ssl.SSLContext, handshake_timeout: float,
                 make_protocol: Callable[[], asyncio.Protocol]) -> None:
        super().__init__()
        self.admit, self.release = admit, release
        self.context, self.handshake_timeout = context, handshake_timeout
        self.make_protocol = make_protocol
        #: handshakes in progress (a task is kept referenced until it ends)
        self._handshakes: set[asyncio.Task] = set()

    def accepted(self, conn: socket.socket, ip: str) -> None:
        if not self.admit(ip):
            conn.close()
            return
        task = self.get_loop().create_task(self._handshake(conn, ip))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, ip: str) -> None:
        try:
            await self.get_loop().connect_accepted_socket(self.make_protocol, conn, ssl=self.context,
                                                          ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            # a timeout, a failed handshake, or the client went away: nothing was handed over
            conn.close()
            self.release(ip)

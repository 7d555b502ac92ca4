"""IMAP connections handed from the first process of `serve` to its workers (workers.py).

With server.workers above 1 only the first process listens on the IMAP ports. It accepts each
connection and hands it, in turn, to itself or to one of the workers: the accepted socket goes
over a Unix socket pair made before the worker was started (SOCK_SEQPACKET, the descriptor
attached with SCM_RIGHTS, ``socket.send_fds``), with the listener's name and the client's
address. The kernel's SO_REUSEPORT spread, which this replaces, hashes each connection's
addresses and ports: ten clients came out 75% on one process and 25% on the other.

Where the admission limits are applied (docs/security.md):

* ``imap.max_preauth_connections_per_ip``: in the first process, for the whole server. A place
  is taken at accept (a refusal answers BYE there: on IMAPS the socket is closed, as no TLS
  channel exists yet); a worker holding a connection tells the first process when the place is
  given back (login, or the connection ended before it) with a ``C`` message. A worker that dies
  gives back every place it held. UNAUTHENTICATE in a worker takes a place again, checked
  against that worker's own count and added to the server's (an ``O`` message).
* the connection gate (``server.max_connections``, the file-descriptor limit): in the process
  that serves the connection, as the descriptors are that process's.
* ``imap.max_connections_per_user_ip`` (after login): in the first process, for the whole
  server (and both listeners). A worker asks for a place at login (``U``, answered ``=``) and
  gives it back when the session ends or unauthenticates (``u``); a worker that dies gives back
  every place it held. A worker that hears no answer within ``imap.handoff_ask_timeout``
  refuses the login (and gives back a place granted after that).

A worker takes connections once it says it is ready (an ``R`` message, sent when its listeners
are up); until then the first process serves its turns. A worker whose channel is gone (it died)
is skipped; the first process serves the connections that would have been its own, so greeting
and logging in go on, and after ``server.worker_respawn_delay`` seconds starts a new worker in
its place (workers.Workers.respawn). A worker that dies again within
``server.worker_respawn_steady`` seconds of its start waits twice as long as the last time, up
to ``server.worker_respawn_max``, so a worker that cannot start (a broken store, no memory) does
not make the first process spin.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable

from ..admission import AcceptingListener, ConnectionCounter
from ..config import ServerConfig
from ..timeouts import within

if TYPE_CHECKING:
    from .service import ImapService

log = logging.getLogger("civicmail.imap")

#: messages read per wake-up of a channel (the rest at the next)
MESSAGE_BATCH = 64
#: the largest message on a channel: a listener's name and an address, or a C/O/U/u/= message
MESSAGE_SIZE = 256


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(first process's end, worker's end) of one worker's channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class _Channel:
    """The first process's end of one worker's channel, and the pre-login places that worker holds."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock, self.number = sock, number
        self.places: Counter[str] = Counter()
        #: the logged-in places ("account ip") that worker holds under the per-user cap
        self.users: Counter[str] = Counter()
        #: the worker said its listeners are up (an R message): only then is it handed connections
        self.ready = False
        self.born = time.monotonic()


class HandoffHub:
    """The first process: whose turn it is, the workers' channels, and the server-wide count of
    connections not logged in yet per address (``preauth``, shared by the imap and imaps listeners)."""

    name = "imap-handoff"

    def __init__(self, channels: list[socket.socket], preauth: ConnectionCounter,
                 stopping: Callable[[], bool] = lambda: False,
                 respawn: Callable[[int], socket.socket | None] | None = None,
                 users: ConnectionCounter | None = None, server: ServerConfig = ServerConfig()) -> None:
        self.channels = [_Channel(sock, n) for n, sock in enumerate(channels, start=1)]
        self.preauth = preauth
        #: the server-wide count of logged-in connections per "account ip" (the per-user cap)
        self.users = users if users is not None else ConnectionCounter(0)
        #: whether the server is stopping (its workers' channels then close as expected)
        self.stopping = stopping
        #: blocking: starts a new worker N and returns our end of its channel (None: not now)
        self.respawn = respawn
        #: the waits before a new worker is started (server.worker_respawn_delay, _steady, _max)
        self.respawn_delay = server.worker_respawn_delay
        self.respawn_steady = server.worker_respawn_steady
        self.respawn_max = server.worker_respawn_max
        #: the last wait before worker N was started again, and the waits and starts under way
        self._delays: dict[int, float] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._turn = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: connections handed over per target: 0 is this process, 1... the workers in order
        self.handed: Counter[int] = Counter()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for channel in self.channels:
            self._listen(channel)

    def _listen(self, channel: _Channel) -> None:
        channel.sock.setblocking(False)
        self._loop.add_reader(channel.sock.fileno(), self._readable, channel)

    async def stop(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for channel in list(self.channels):
            self._drop(channel)
        if self._tasks:  # a start under way: its new channel is closed when it returns
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def route(self, conn: socket.socket, ip: str, service: "ImapService") -> None:
        """Serve ``conn`` (its pre-login place taken) here or hand it to the next worker."""
        while True:
            targets = len(self.channels) + 1
            turn = self._turn % targets
            self._turn = turn + 1
            if turn == 0:
                self.handed[0] += 1
                service.adopt(conn, ip)
                return
            channel = self.channels[turn - 1]
            if not channel.ready:  # still starting: this process takes its turn
                continue
            try:
                socket.send_fds(channel.sock, [f"{service.name} {ip}".encode()], [conn.fileno()])
            except BlockingIOError:  # that worker is behind on its channel: the next one takes it
                continue
            except OSError as exc:  # the worker is gone
                log.warning("IMAP worker channel failed (%s): connections go to the other processes", exc)
                self._drop(channel)
                continue
            channel.places[ip] += 1
            self.handed[channel.number] += 1
            conn.close()  # the worker holds its own descriptor now
            return

    def _readable(self, channel: _Channel) -> None:
        for _ in range(MESSAGE_BATCH):
            try:
                data = channel.sock.recv(MESSAGE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                if not self.stopping():
                    log.warning("an IMAP worker's channel closed (the worker stopped or died): "
                                "its share of connections goes to the other processes")
                self._drop(channel)
                return
            kind, ip = data[:1], data[2:].decode("ascii", "replace")
            if kind == b"C" and channel.places[ip] > 0:
                channel.places[ip] -= 1
                if not channel.places[ip]:
                    del channel.places[ip]
                self.preauth.close(ip)
            elif kind == b"O":
                channel.places[ip] += 1
                self.preauth.add(ip)
            elif kind == b"U":
                self._grant(channel, ip)
            elif kind == b"u" and channel.users[ip] > 0:
                channel.users[ip] -= 1
                if not channel.users[ip]:
                    del channel.users[ip]
                self.users.close(ip)
            elif kind == b"R" and not channel.ready:
                channel.ready = True
                log.info("IMAP worker %d takes connections", channel.number)

    def _grant(self, channel: _Channel, ask: str) -> None:
        """A worker's ``U request account ip``: a logged-in place under the per-user cap, or not."""
        request, _, key = ask.partition(" ")
        granted = self.users.open(key)
        try:
            channel.sock.send(b"= %s %d" % (request.encode("ascii", "replace"), granted))
        except OSError:  # its channel is full or gone: no answer, so no place (it times out)
            if granted:
                self.users.close(key)
            return
        if granted:
            channel.users[key] += 1

    def _drop(self, channel: _Channel) -> None:
        """Stop handing to ``channel``'s worker; the places it held are given back."""
        if channel not in self.channels:
            return
        self.channels.remove(channel)
        if self._loop is not None and channel.sock.fileno() >= 0:
            self._loop.remove_reader(channel.sock.fileno())
        channel.sock.close()
        for ip, n in channel.places.items():
            for _ in range(n):
                self.preauth.close(ip)
        channel.places.clear()
        for key, n in channel.users.items():
            for _ in range(n):
                self.users.close(key)
        channel.users.clear()
        if self.respawn is not None and not self._closed and not self.stopping():
            self._replace_later(channel.number, channel.born)

    def _replace_later(self, number: int, born: float) -> None:
        """A new worker ``number`` after a wait that grows while it keeps dying young (``born``:
        when its channel was made)."""
        last = self._delays.get(number)
        if last is None or time.monotonic() - born >= self.respawn_steady:
            delay = self.respawn_delay
        else:
            delay = min(self.respawn_max, last * 2)
        self._delays[number] = delay
        log.warning("IMAP worker %d is gone: another is started in its place in %g s", number, delay)
        self._timers[number] = self._loop.call_later(delay, self._replace_now, number)

    def _replace_now(self, number: int) -> None:
        self._timers.pop(number, None)
        task = self._loop.create_task(self._replace(number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, number: int) -> None:
        try:
            sock = await self._loop.run_in_executor(None, self.respawn, number)
        except Exception:  # could not start one (no memory, no descriptors): try again later
            log.exception("starting IMAP worker %d failed", number)
            if not self._closed and not self.stopping():
                self._replace_later(number, time.monotonic())
            return
        if sock is None:
            return
        if self._closed:
            sock.close()
            return
        channel = _Channel(sock, number)
        self.channels.append(channel)
        self.channels.sort(key=lambda c: c.number)
        self._listen(channel)


class HandoffListener(AcceptingListener):
    """The first process's listening sockets in hand-off mode: each accepted connection takes
    its pre-login place (``ImapService.take_place``) and goes to ``hub.route``."""

    def __init__(self, service: "ImapService", hub: HandoffHub) -> None:
        super().__init__()
        self.service, self.hub = service, hub

    def accepted(self, conn: socket.socket, ip: str) -> None:
        if self.service.take_place(conn, ip):
            self.hub.route(conn, ip, self.service)


class RemotePlaces:
    """A worker's view of ``imap.max_preauth_connections_per_ip`` (ConnectionCounter's ``open``
    and ``close``): the places are the first process's; this one counts its own and tells it."""

    def __init__(self, link: "HandoffWorker", limit: int) -> None:
        self.link = link
        self.local = ConnectionCounter(limit)

    def adopted(self, ip: str) -> None:
        """A connection handed over with its place taken by the first process."""
        self.local.add(ip)

    def open(self, ip: str) -> bool:
        if not self.local.open(ip):
            return False
        self.link.tell(b"O", ip)
        return True

    def close(self, ip: str) -> None:
        self.local.close(ip)
        self.link.tell(b"C", ip)


class RemoteUsers:
    """A worker's view of ``imap.max_connections_per_user_ip``: the places ("account ip") are
    the first process's, asked for at login and given back when the session ends. ``timeout``:
    seconds a login waits for the first process's answer (imap.handoff_ask_timeout)."""

    def __init__(self, link: "HandoffWorker", timeout: float) -> None:
        self.link = link
        self.timeout = timeout

    async def ask(self, key: str) -> bool:
        request, future = self.link.ask(key)
        try:
            return await within(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            self.link.forget(request)
            log.warning("imap: the first process did not answer a login's place within %g s "
                        "(imap.handoff_ask_timeout): refused", self.timeout)
            return False

    def close(self, key: str) -> None:
        self.link.tell(b"u", key)


class HandoffWorker:
    """A worker's end of its channel: receives connections and gives them to its listener of
    that name (``ImapService.adopt``); sends the first process C and O messages."""

    name = "imap-handoff"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.services: dict[str, "ImapService"] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[bytes] = collections.deque()
        #: logged-in places asked of the first process and not answered yet: request -> (key,
        #: the asker's future, or None once it stopped waiting)
        self._asks: dict[int, tuple[str, asyncio.Future | None]] = {}
        self._next_ask = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self.tell(b"R", "-")  # the listeners started before this: connections may come
        log.info("imap: serving the connections the first process hands over")

    async def stop(self) -> None:
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            if self._pending:
                self._loop.remove_writer(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        for _ in range(MESSAGE_BATCH):
            try:
                data, fds, _flags, _ = socket.recv_fds(self.sock, MESSAGE_SIZE, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:  # it stopped (a worker of serve is stopped with it: PR_SET_PDEATHSIG)
                log.info("imap: the first process's channel closed: no more connections come here")
                self._loop.remove_reader(self.sock.fileno())
                for _, future in self._asks.values():  # nobody will grant them
                    if future is not None and not future.done():
                        future.set_result(False)
                self._asks.clear()
                return
            if data[:2] == b"= ":  # the answer to a ``U`` (ask)
                for fd in fds:
                    socket.socket(fileno=fd).close()
                self._answered(data)
                continue
            name, _, ip = data.decode("ascii", "replace").partition(" ")
            service = self.services.get(name)
            if not fds or service is None:  # no descriptor came (this process's file limit): give the place back
                for fd in fds:
                    socket.socket(fileno=fd).close()
                log.warning("imap: a connection from %s handed over without a descriptor or listener: dropped", ip)
                self.tell(b"C", ip)
                continue
            conn = socket.socket(fileno=fds[0])
            conn.setblocking(False)
            service.preauth.adopted(ip)
            service.adopt(conn, ip)

    def ask(self, key: str) -> tuple[int, asyncio.Future]:
        """Ask the first process for a logged-in place for ``key`` ("account ip"): the request's
        number and a future of whether it was granted."""
        self._next_ask += 1
        future = self._loop.create_future()
        self._asks[self._next_ask] = (key, future)
        self.tell(b"U", f"{self._next_ask} {key}")
        return self._next_ask, future

    def forget(self, request: int) -> None:
        """The asker stopped waiting: a place granted later is given back at once."""
        if request in self._asks:
            key, _ = self._asks[request]
            self._asks[request] = (key, None)

    def _answered(self, data: bytes) -> None:
        _, request, granted = data.decode("ascii", "replace").split(" ", 2)
        key, future = self._asks.pop(int(request), (None, None)) if request.isdigit() else (None, None)
        if key is None:
            return
        if future is None:  # given up on (timed out): a place granted now goes back
            if granted == "1":
                self.tell(b"u", key)
        elif not future.done():
            future.set_result(granted == "1")

    def tell(self, kind: bytes, ip: str) -> None:
        message = kind + b" " + ip.encode()
        if not self._pending:
            try:
                self.sock.send(message)
                return
            except BlockingIOError:
                pass
            except OSError:  # the first process is gone: nobody to tell
                return
            self._loop.add_writer(self.sock.fileno(), self._flush)
        self._pending.append(message)

    def _flush(self) -> None:
        while self._pending:
            try:
                self.sock.send(self._pending[0])
            except BlockingIOError:
                return
            except OSError:
                self._pending.clear()
                break
            self._pending.popleft()
        self._loop.remove_writer(self.sock.fileno())

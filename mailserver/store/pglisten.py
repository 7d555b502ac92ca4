"""PostgreSQL: one node's LISTEN connection, on only the channels its sessions need (issue 13, 4).

Writers send one ``pg_notify`` per channel their commit touched (``notify.notifications``): a
folder's channel ``civicmail_f<id mod 1024>``, an account's ``civicmail_a<id mod 1024>``. This
node LISTENs to the channels of the folders and accounts some listener of its hub waits on,
reference-counted by the hub: LISTEN when a channel's first folder gets a listener, UNLISTEN when
its last one goes. PostgreSQL still queues every notification once for the cluster, but a
backend hands its client only those of the channels it listens to, so a node no longer parses
(nor wakes for) the changes of folders nobody on it watches.

psycopg's connection is not thread-safe, so one thread owns it: the hub's ``on_interest`` wakes
that thread through a socketpair, and it LISTENs / UNLISTENs between reading notifications.

Lost wake-ups: a change committed before a LISTEN took effect is never heard, so once it has
(``hub.wake_channel``) the channel's listeners look once, and so does a session subscribing
later whose look began before (``announced_since``). A lost connection is made again after a
pause, LISTENs to every channel again, and wakes every listener once (``hub.wake_all``).
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from dataclasses import dataclass

from .notify import ChangeHub, parse_payload
from .outage import describe

log = logging.getLogger("civicmail.notify")


@dataclass
class ListenFigures:
    """What the thread did so far (read by the metrics and the tests, from any thread)."""

    #: notifications received (one per channel a commit touched and this node listened to)
    received: int = 0
    #: of which sent by this process's own connections, and skipped (``Store.own_backends``)
    own: int = 0
    #: channels LISTENed to now
    channels: int = 0
    listens: int = 0
    unlistens: int = 0
    #: LISTEN connections made (1 once connected, more after each reconnect)
    connections: int = 0
    #: the backend pid of the current LISTEN connection (0 when none)
    backend_pid: int = 0


class ChannelListener:
    def __init__(self, store, hub: ChangeHub, retry_seconds: float = 1.0) -> None:
        self.store = store
        self.hub = hub
        self.retry_seconds = retry_seconds
        self.figures = ListenFigures()
        self._running = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: channels LISTENed to on the current connection
        self._listening: set[str] = set()

    def start(self) -> None:
        self._running = True
        self.hub.on_interest = self.wake
        self._thread = threading.Thread(target=self._run, name="folder-listen", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """From any thread: the hub's channels changed."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # a wake-up is already pending (buffer full) or closed
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Blocking: end the thread (it closes its connection)."""
        self._running = False
        self.hub.on_interest = None
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # still connecting: it ends by itself, on open sockets
                return
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            try:
                with self.store.listen_connection() as conn:
                    self._serve(conn)
            except Exception as exc:  # the database restarted, or our backend was ended
                if not self._running:
                    break
                log.warning("LISTEN connection lost: %s", describe(exc))
            self.figures.backend_pid = 0
            self._listening = set()
            self.figures.channels = 0
            # a pause before reconnecting; a stop() wakes it at once
            select.select([self._wake_r], [], [], self.retry_seconds)

    def _serve(self, conn) -> None:
        self.figures.connections += 1
        self.figures.backend_pid = conn.info.backend_pid
        self._update(conn, {channel: True for channel in self.hub.channels()})
        self.hub.wake_all()  # what was committed while no LISTEN ran here (or before the first)
        fileno = conn.fileno()
        while self._running:
            self._read(conn)
            ready, _, _ = select.select([fileno, self._wake_r], [], [], 60.0)
            if self._wake_r in ready:
                self._drain_wakes()
                if not self._running:
                    return
                for channel in self._update(conn, self.hub.channel_interest()):
                    self.hub.wake_channel(channel)
            elif not ready:  # an idle minute: a dead connection shows up here, not in select
                conn.execute("SELECT 1")

    def _read(self, conn) -> None:
        """The notifications at hand: those psycopg kept while a LISTEN ran, those on the socket,
        and those libpq read with a statement's reply but has not parsed (the socket no longer
        says readable for them)."""
        for note in conn.notifies(timeout=0):
            self._heard(note.payload, note.pid)
        while (pgn := conn.pgconn.notifies()) is not None:
            self._heard(pgn.extra.decode(), pgn.be_pid)

    def _update(self, conn, interest: dict[str, bool]) -> list[str]:
        """LISTEN to the wanted channels not yet listened to, UNLISTEN the unwanted; the
        channels newly listened to."""
        added = []
        for channel, wanted in sorted(interest.items()):
            if wanted and channel not in self._listening:
                conn.execute(f"LISTEN {channel}")  # a name of ours (notify.folder_channel), never input
                self._listening.add(channel)
                self.figures.listens += 1
                added.append(channel)
            elif not wanted and channel in self._listening:
                conn.execute(f"UNLISTEN {channel}")
                self._listening.discard(channel)
                self.figures.unlistens += 1
        self.figures.channels = len(self._listening)
        return added

    def _drain_wakes(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _heard(self, payload: str, pid: int) -> None:
        self.figures.received += 1
        if pid in self.store.own_backends and self.hub is self.store.hub:
            self.figures.own += 1  # its writer told the hub after its COMMIT
            return
        folders, accounts = parse_payload(payload)
        if folders:
            self.hub.changed(folders)
        if accounts:
            self.hub.account_changed(accounts)

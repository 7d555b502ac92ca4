"""`serve` on every core: with ``server.workers`` above 1 (0: one per CPU core), the first
process serves everything and N - 1 more processes serve IMAP and the citizens' HTTP (the
portal, the sign-in provider, autoconfig, unsubscribe) on the same ports.

IMAP: only the first process listens; it hands each accepted connection in turn to itself or to
a worker over a Unix socket pair (imap/handoff.py), so long-lived sessions are spread evenly.
A worker that dies is replaced (``Workers.respawn``, when handoff.py says so).
The citizens' HTTP: each process binds the listener with SO_REUSEPORT and the kernel spreads new
connections over them. One process is held to one core by the GIL. The workers share the store as nodes do:
a write made in one is told to the sessions of the others by the folder watcher (PostgreSQL
LISTEN/NOTIFY; on SQLite ``PRAGMA data_version`` and HIGHESTMODSEQ, polled four times a second),
so a session in IDLE hears of new mail whichever process took it. The web face keeps nothing
between requests in a process (sessions, codes and tokens are rows; cookies are sealed with the
city's keys), so any process answers any request of a sign-in. SMTP, the metrics listener, the
outbound queue, the spool watcher and the hourly pruning run in the first process only.

Per process, not per server (docs/security.md): the connection gate (``server.max_connections``),
HTTP's per-address caps, the login throttle, the login cache and the lanes. IMAP's pre-login cap
per address (``imap.max_preauth_connections_per_ip``) and its per-user cap
(``imap.max_connections_per_user_ip``) are the whole server's, kept by the first process
(imap/handoff.py).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

log = logging.getLogger("civicmail.server")

#: the services an IMAP worker runs (the first process runs server.SERVICE_FACTORIES)
WORKER_FACTORIES: tuple[str, ...] = ("mailserver.imap.service:make_worker_services",
                                     "mailserver.web.service:make_worker_services")


#: seconds to wait for a worker whose channel closed to end before it is killed (``respawn``)
RESPAWN_JOIN = 5.0


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def worker_count(config) -> int:
    """Processes ``serve`` runs: server.workers, or one per CPU core for 0."""
    n = config.server.workers
    return n if n > 0 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _worker_main(config, number: int, channel=None) -> None:
    """An IMAP worker process: its own store connections, lanes and loop."""
    from .logs import setup_logging
    from .registry import Registry
    from .server import ServerContext, run_loop, serve
    from .store import open_store

    _die_with_parent()
    setup_logging(config.server.log_level)
    store = open_store(config)
    ctx = ServerContext(config, store, Registry(config, store), handoff=("work", channel) if channel else None)
    log.info("IMAP worker %d (pid %d) starting", number, os.getpid())
    try:
        run_loop(config, serve(ctx, factories=WORKER_FACTORIES))
    finally:
        store.dispose()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the first process dies, however it dies (a SIGKILL gives
    it no chance to stop its workers), so no orphan keeps serving the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the first process stops them on its way out
        pass
    if os.getppid() == 1:  # the parent died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Workers:
    """The extra IMAP processes of one ``serve`` (started once its own listeners are bound)."""

    def __init__(self, config) -> None:
        self.config = config
        self.procs: list[multiprocessing.process.BaseProcess] = []
        #: the workers' ends of their IMAP hand-off channels (``channels``), given to them at start
        self._ends: list = []
        #: held while a worker is started in a dead one's place, and by ``stop`` to end that
        self._lock = threading.Lock()
        self._stopped = False

    def channels(self) -> tuple | None:
        """Before the first process's services are built: ("accept", [its end of each worker's
        channel]) for ``ServerContext.handoff`` when there are workers and IMAP runs, else None."""
        cfg = self.config
        if worker_count(cfg) < 2 or cfg.external_store or not (cfg.imap.listen or cfg.imaps.listen):
            return None
        from .imap.handoff import channel_pair

        pairs = [channel_pair() for _ in range(1, worker_count(cfg))]
        self._ends = [worker for _, worker in pairs]
        return ("accept", [first for first, _ in pairs])

    def start(self) -> None:
        for number in range(1, worker_count(self.config)):
            self.procs.append(self._spawn(number, self._ends[number - 1] if self._ends else None))
        if self.procs:
            log.info("%d IMAP worker processes beside this one: pids %s", len(self.procs),
                     ", ".join(str(p.pid) for p in self.procs))

    def _spawn(self, number: int, end) -> multiprocessing.process.BaseProcess:
        mp = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or loop forked
        proc = mp.Process(target=_worker_main, args=(self.config, number, end), name=f"civicmail-imap-{number}",
                          daemon=True)
        proc.start()
        if end is not None:
            end.close()  # the worker has its own copy: its death closes the channel
        return proc

    def respawn(self, number: int):
        """Worker ``number``'s channel closed while serve runs (imap/handoff.py): wait for that
        process to end (killed if it lingers), start a new one on a new channel, and return the
        first process's end of it; None once serve stops. Blocking: called off the event loop."""
        from .imap.handoff import channel_pair

        with self._lock:
            if self._stopped:
                return None
            old = self.procs[number - 1]
            old.join(RESPAWN_JOIN)
            if old.is_alive():  # it closed its channel but did not end
                old.kill()
                old.join(5)
            first, end = channel_pair()
            proc = self._spawn(number, end)
            self.procs[number - 1] = proc
        log.warning("IMAP worker %d (pid %s) ended with %s: started pid %d in its place", number, old.pid,
                    _exit_text(old.exitcode), proc.pid)
        return first

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM each worker (it stops as serve does: work in flight finishes), then wait.
        No worker is started in a dead one's place after this begins."""
        with self._lock:
            self._stopped = True
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout)
            if proc.is_alive():
                log.warning("IMAP worker pid %d did not stop within %g s: killed", proc.pid, timeout)
                proc.kill()
                proc.join(5)
        self.procs.clear()

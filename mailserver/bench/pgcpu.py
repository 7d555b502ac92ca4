"""The CPU that a bench run's PostgreSQL backends use (issue 13): on a loaded machine a rate
(commands/s) moves with the load, the CPU each command costs the database much less.

Only for a server on this machine: its backends' ``/proc/PID/stat`` are read. The backends are
those of ``pg_stat_activity`` in the bench's database (the server's connections and any
autovacuum worker there; not the checkpointer, WAL writer or background writer, which belong
to no database), less the one that asks. A backend can end within the window (a pool's overflow
connection closed): the sampler looks every ``interval`` seconds and keeps each backend's last
figure, so at most its last interval is missed."""
from __future__ import annotations

import threading

from .util import CLOCK_TICKS, cpu_ticks


class BackendCpu:
    """``start()`` and ``stop()`` around the measured window; ``seconds`` is then the CPU its
    backends used within it (user + system), ``backends`` how many were seen."""

    def __init__(self, url: str, interval: float = 0.5) -> None:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.database = parsed.database
        self.conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.interval = interval
        self.seconds = 0.0
        self.backends = 0
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None

    def _pids(self) -> list[int]:
        with self._conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        (self.database,))
            return [pid for (pid,) in cur.fetchall()]

    def _sample(self) -> None:
        for pid in self._pids():
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self._last[pid] = ticks[0] + ticks[1]

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def start(self) -> "BackendCpu":
        import psycopg

        self._conn = psycopg.connect(self.conninfo, autocommit=True)
        self._sample()
        self._first = dict(self._last)  # a backend first seen later began within the window: all its CPU counts
        self._thread = threading.Thread(target=self._run, name="bench-pg-cpu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "BackendCpu":
        self._done.set()
        self._thread.join()
        self._sample()
        self._conn.close()
        total = sum(last - self._first.get(pid, 0) for pid, last in self._last.items())
        self.seconds = total / CLOCK_TICKS
        self.backends = len(self._last)
        return self

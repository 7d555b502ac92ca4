"""Prometheus metrics of one `civicmail serve`: ``ServerContext.metrics``, served at ``/metrics`` on
the metrics listener (``http.metrics_listen``, web/metrics.py).

Each ServerContext owns its own CollectorRegistry (never prometheus_client's global one), so
several servers in one process (tests, benchmarks) count apart. The protocol edges count at
their shared points: SMTP's reply path (``CivicSMTP.push``) and its one log line per message
(``Handler._log``), IMAP's command dispatch (``ImapSession.execute``), ``ServerContext.login``,
the two group commits, the outbound runner. Connections come from the connection gate's own
tallies (admission.py), password checks from the checker's (identity/passwords.py) and change
notifications from the LISTEN thread's (store/pglisten.py), read when scraped.

What every node of a city shares, the outbound queue and the drops, is read from the store when
scraped (``store_figures``: two GROUP BY queries over small tables), so it counts what other
processes did too (``civicmail drop run``, another node): on several nodes, aggregate those
series with ``max``, not ``sum``.

Every label value is one of a fixed set (a command the server knows, a reply code, a reason
the code names), never client text, so the series stay few.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from .outbound.queue import age_seconds
from .store.models import Drop, OutboundMessage
from .store.models.delivery import ROW_COUNT_COLUMNS

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "StoreFigures", "store_figures"]

#: seconds: from a millisecond commit to the minute a commit may wait (store.commit_timeout)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: an outbound delivery takes from a second to the days of its retries
OUTBOUND_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 4 * 86400.0)


@dataclass
class StoreFigures:
    """What the store says when scraped: the outbound queue and the drops."""

    #: state -> (entries, the oldest one's created_at)
    queue: dict[str, tuple[int, dt.datetime | None]] = field(default_factory=dict)
    #: (state, source) -> drops
    drops: dict[tuple[str, str], int] = field(default_factory=dict)
    #: a row's outcome (its status: delivered, invalid, unmatched, ...) -> rows of every drop
    rows: dict[str, int] = field(default_factory=dict)


#: each outcome of a drop row (its status) and the drop's column that counts it
ROW_OUTCOMES = {status: getattr(Drop, column) for status, column in ROW_COUNT_COLUMNS.items()}


def store_figures(store) -> StoreFigures:
    """Blocking: the queue and drop figures, two small GROUP BY queries (the queue holds what
    has not left yet; the drop table one row per file, with its rows counted by outcome)."""
    figures = StoreFigures()
    with store.reader() as s:
        for state, n, oldest in s.execute(select(OutboundMessage.state, func.count(), func.min(OutboundMessage.created_at))
                                          .group_by(OutboundMessage.state)):
            figures.queue[state] = (n, oldest)
        for state, source, n, *rows in s.execute(
                select(Drop.state, Drop.source, func.count(),
                       *(func.coalesce(func.sum(column), 0) for column in ROW_OUTCOMES.values()))
                .group_by(Drop.state, Drop.source)):
            figures.drops[(state, source or "")] = n
            for outcome, count in zip(ROW_OUTCOMES, rows):
                figures.rows[outcome] = figures.rows.get(outcome, 0) + int(count)
    return figures


class _ScrapeTimeCollector:
    """The series computed when scraped: the gate's connection tallies and the store figures."""

    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def describe(self) -> list:
        return []  # computed at each scrape (a registry calls collect() for names otherwise)

    def collect(self):
        m = self.metrics
        if m.gate is not None:
            gate = m.gate
            accepted = CounterMetricFamily("civicmail_connections", "Client connections accepted from a listen "
                                           "socket (refused ones included)", labels=["listener"])
            for listener, n in sorted(gate.accepted.items()):
                accepted.add_metric([listener], n)
            yield accepted
            refused = CounterMetricFamily("civicmail_connections_refused", "Connections refused at once: busy (the "
                                          "process's connection limit) or per_address (a per-IP cap)",
                                          labels=["listener", "reason"])
            for (listener, reason), n in sorted(gate.refusals.counts.items()):
                refused.add_metric([listener, reason], n)
            yield refused
            open_now = GaugeMetricFamily("civicmail_connections_open", "Client connections (sessions) open now",
                                         labels=["listener"])
            for listener, n in sorted(gate.open_by.items()):
                open_now.add_metric([listener], n)
            yield open_now
            yield GaugeMetricFamily("civicmail_connections_limit", "Client connections the process admits at once "
                                    "(server.max_connections or the open-file limit)", value=gate.limit)
        listener = m.watcher.listener if m.watcher is not None else None
        if listener is not None:  # PostgreSQL: the node's LISTEN thread (store/pglisten.py)
            yield CounterMetricFamily("civicmail_store_notifications_received", "Change notifications this node "
                                      "received from PostgreSQL (one per channel a commit touched, on the channels "
                                      "its sessions' folders and accounts hash to)", value=listener.figures.received)
            yield GaugeMetricFamily("civicmail_store_notify_channels", "PostgreSQL NOTIFY channels this node "
                                    "LISTENs to now (of 2,048: 1,024 for folders, 1,024 for accounts)",
                                    value=listener.figures.channels)
        if m.passwords is not None:
            checks = CounterMetricFamily("civicmail_password_checks", "Login passwords checked, by how: hashed "
                                         "(argon2) or cached (a recent verification, login.cache_size)",
                                         labels=["how"])
            for how, n in sorted(m.passwords.checks.items()):
                checks.add_metric([how], n)
            yield checks
        yield GaugeMetricFamily("civicmail_store_up", "1 if the store answered this scrape's queries, else 0",
                                value=1 if m.figures is not None else 0)
        if m.figures is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        length = GaugeMetricFamily("civicmail_outbound_queue_messages", "Outbound queue entries by state "
                                   "(queued, sending, bounced)", labels=["state"])
        age = GaugeMetricFamily("civicmail_outbound_queue_oldest_seconds", "Age of the oldest outbound queue entry "
                                "by state (0 when there is none)", labels=["state"])
        for state in ("queued", "sending", "bounced"):
            n, oldest = m.figures.queue.get(state, (0, None))
            length.add_metric([state], n)
            age.add_metric([state], age_seconds(oldest, now))
        yield length
        yield age
        drops = GaugeMetricFamily("civicmail_drops", "Drops recorded in the store by state (running, done, failed) "
                                  "and source (cli, spool, mail)", labels=["state", "source"])
        rows = GaugeMetricFamily("civicmail_drop_rows", "Rows of recorded drops by outcome: delivered, invalid, "
                                 "unmatched (paper mail), held, opted-out, duplicate, failed", labels=["outcome"])
        for (state, source), n in sorted(m.figures.drops.items()):
            drops.add_metric([state, source], n)
        for outcome in ROW_OUTCOMES:
            rows.add_metric([outcome], m.figures.rows.get(outcome, 0))
        yield drops
        yield rows


class Metrics:
    """The series of one server, in its own registry."""

    def __init__(self, gate=None, passwords=None) -> None:
        self.registry = r = CollectorRegistry()
        #: the connection gate (admission.ConnectionGate) whose tallies are read when scraped
        self.gate = gate
        #: the password checker (identity/passwords.Passwords) whose tallies are read when scraped
        self.passwords = passwords
        #: the process's folder watcher (store/notify.FolderWatcher), whose LISTEN figures are read
        #: when scraped; None without one
        self.watcher = None
        #: the store's figures from the last scrape; None if the store did not answer
        self.figures: StoreFigures | None = None
        self.smtp_commands = Counter("civicmail_smtp_commands", "SMTP commands by listener and verb",
                                     ["listener", "command"], registry=r)
        self.smtp_replies = Counter("civicmail_smtp_replies", "SMTP replies by listener, the command answered "
                                    "(none: a greeting or an unknown command) and reply code",
                                    ["listener", "command", "code"], registry=r)
        self.messages = Counter("civicmail_messages", "SMTP messages (refusals at RCPT: recipients) by outcome "
                                "(accepted, refused, deferred) and reason", ["listener", "outcome", "reason"],
                                registry=r)
        self.delivery_seconds = Histogram("civicmail_delivery_seconds", "From the end of DATA to the message "
                                          "durable in its mailboxes (path smtp)", ["path"], buckets=LATENCY_BUCKETS,
                                          registry=r)
        self.outbound_seconds = Histogram("civicmail_outbound_delivery_seconds", "From queueing to the relay's "
                                          "acceptance, retries included", buckets=OUTBOUND_BUCKETS, registry=r)
        self.outbound_attempts = Counter("civicmail_outbound_attempts", "Outbound delivery attempts by outcome "
                                         "(sent, deferred, bounced)", ["outcome"], registry=r)
        self.imap_commands = Counter("civicmail_imap_commands", "IMAP commands by name and tagged status (OK, NO, "
                                     "BAD)", ["command", "status"], registry=r)
        #: (command, status) -> IMAP commands answered since the last scrape, added to
        #: imap_commands when scraped (``imap_command``); as many keys as registered commands
        #: times statuses
        self._imap_pending: dict[tuple[str, str], int] = {}
        self.logins = Counter("civicmail_logins", "Login attempts (IMAP, SMTP AUTH) by listener and outcome (ok, "
                              "failed, throttled, unavailable)", ["listener", "outcome"], registry=r)
        self.commit_seconds = Histogram("civicmail_store_commit_seconds", "Seconds of one group COMMIT by writer "
                                        "(smtp: delivered mail; imap: IMAP writes on SQLite; imap-unsynced: flag changes "
                                        "committed without an fsync, imap.fsync_flag_changes)", ["writer"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.http_requests = Counter("civicmail_http_requests", "HTTP requests by listener, route and status",
                                     ["listener", "route", "status"], registry=r)
        r.register(_ScrapeTimeCollector(self))

    # -- the shared points call these ------------------------------------------------------------
    def login(self, listener: str, outcome: str) -> None:
        self.logins.labels(listener, outcome).inc()

    def imap_command(self, command: str, status: str) -> None:
        """One IMAP command answered (``command`` a registered name, never the client's text).
        Counted in a plain dict on the event loop and added to the series at the next scrape
        (on the same loop): the series' own count takes a lock and costs several times as much,
        once for every command."""
        pending = self._imap_pending
        key = (command, status)
        pending[key] = pending.get(key, 0) + 1

    def _fold_imap(self) -> None:
        """The IMAP commands counted since the last scrape into their series."""
        pending, self._imap_pending = self._imap_pending, {}
        for (command, status), n in pending.items():
            self.imap_commands.labels(command, status).inc(n)

    def commit_observer(self, writer: str):
        """A callable(seconds) for a group commit to report each COMMIT with (any thread)."""
        return self.commit_seconds.labels(writer).observe

    # -- a scrape ---------------------------------------------------------------------------------
    async def scrape(self, ctx) -> bytes:
        """The exposition text, with the store's figures read now (off the loop, bounded by
        store.lookup_timeout; a store that does not answer gives civicmail_store_up 0)."""
        try:
            self.figures = await ctx.run_store(store_figures, ctx.store)
        except Exception:  # the store is down: the in-process series are still worth having
            self.figures = None
        self._fold_imap()
        return generate_latest(self.registry)


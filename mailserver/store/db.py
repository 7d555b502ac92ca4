"""Engines and sessions. Blocking calls: protocol edges run them in a thread executor."""
from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from ..config import StoreConfig
from ..errors import ConfigError, Conflict, StoreUnavailable
from . import writequeue
from .groupcommit import GroupCommit, sqlite_execute
from .leaves import PARTITIONS_SQL, message_table, partitions_from
from .notify import ChangeHub

#: TCP keepalives on PostgreSQL connections: a peer silent for this long is probed ...
KEEPALIVE_IDLE = 10
#: ... every this many seconds, and dropped after this many probes unanswered (~25 s in all)
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
#: how PostgreSQL plans the statements psycopg prepared on a direct connection (``_postgresql_bounds``)
PLAN_CACHE_MODE = "force_generic_plan"
#: a pooled PostgreSQL connection back in the pool for longer than this (seconds) is pinged
#: before it is used again (``_ping_when_idle``)
PING_IDLE = 1.0
#: the key of a pooled connection's ``info``: when it was last used, if that was before its
#: checkin (a connection a thread kept idle, ``driver.OwnAutocommit``, given back)
LAST_USED = "civicmail_last_used"


def _sqlite_pragmas(busy_timeout: float):
    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a transaction is on disk when COMMIT returns ("acknowledged means durable").
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    return on_connect


def _postgresql_bounds(connect_timeout: float, statement_timeout: float, pooled: bool = False) -> dict:
    """libpq parameters so that no wait on the database is endless: connecting, a silent or
    vanished peer (keepalives; unacknowledged data, tcp_user_timeout), a statement or an idle
    transaction on the server (a client that went away mid-transaction releases its locks).

    ``pooled``: the connection goes through a pooler in transaction mode (PgBouncer), where each
    transaction may run on another server connection. No prepared statements then (psycopg
    prepares a query after its fifth run on a connection, and the next transaction may find
    another server connection that never saw it), and no ``options`` (PgBouncer refuses the
    startup parameter: its ``connect_query`` sets the two server timeouts, docs/scale.md).

    Straight to the server, a prepared statement runs a generic plan (``plan_cache_mode``):
    PostgreSQL's own choice, after five custom plans, keeps planning each run afresh when the
    statement reads a partitioned table (``message``, ``notice``), whose generic plan it costs
    over every partition though run-time pruning reads one; that planning, at each Bind, was a
    quarter to a third of the database's CPU in the IMAP mix (docs/benchmarks.md, eleventh
    session). What we run often are keyed lookups (an account, a folder, ids); no index is
    partial on a value a statement binds and none is searched with LIKE, so a plan that does not
    know the values picks the same indexes as one that does."""
    ms = int(statement_timeout * 1000)
    bounds = {"connect_timeout": max(2, int(round(connect_timeout))),  # libpq: whole seconds, at least 2
              "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE, "keepalives_interval": KEEPALIVE_INTERVAL,
              "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": ms}
    if pooled:
        return {**bounds, "prepare_threshold": None}
    return {**bounds, "options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms} "
                                 f"-c plan_cache_mode={PLAN_CACHE_MODE}"}


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """SQLAlchemy's pre-ping, but only of a connection that waited in the pool for more than
    ``idle`` seconds: the ping is a round trip on every checkout, and a connection checked in a
    moment ago (under load, nearly all of them) is as alive as the ping would say. A server
    restarted, or a pooler, drops connections while they wait; one dropped within ``idle`` of
    its last use fails the statement it is used for, as one dropped while in use always did.
    A failed ping takes the connection and every older one out of the pool, as pre-ping does.
    A connection kept idle by a thread before its checkin counts as waiting since its last use
    (``LAST_USED``)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:
        record.info["civicmail_checked_in"] = record.info.pop(LAST_USED, None) or time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy) -> None:
        since = record.info.pop("civicmail_checked_in", None)
        if since is None or time.monotonic() - since <= idle:  # a new connection, or one just used
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                raise InvalidatePoolError(str(exc)) from exc
            raise


def _track_backends(engine: Engine, pids: set[int]) -> None:
    """Keep ``pids`` the backend pids of the engine's open connections: added as each is made,
    taken out as it is closed, invalidated or detached (then no longer ours to know)."""

    @event.listens_for(engine, "connect")
    def _made(dbapi_conn, record) -> None:
        record.info["civicmail_backend"] = pid = dbapi_conn.info.backend_pid
        pids.add(pid)

    def _gone(_dbapi_conn, record, *_) -> None:
        pids.discard(record.info.pop("civicmail_backend", None))

    for name in ("close", "invalidate", "detach"):
        event.listen(engine, name, _gone)


def make_engine(url: str, busy_timeout: float = 30.0, connect_timeout: float = 5.0, statement_timeout: float = 30.0,
                pooled: bool = False, prepared_statements: int = StoreConfig.prepared_statements,
                **kwargs) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"store.url: {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Connections are cheap to keep and costly to open (each runs the PRAGMAs): keep at
        # least as many as the servers' store executor has threads.
        connect_args: dict = {"check_same_thread": False}
        if parsed.database and parsed.database != ":memory:":
            kwargs.setdefault("pool_size", 24)
            kwargs.setdefault("max_overflow", 16)
            # writers of several processes (serve's workers) queue in the kernel (writequeue.py)
            connect_args["factory"] = writequeue.factory(busy_timeout)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout))

        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN
        # (IMMEDIATE) so that two writers never deadlock upgrading a read lock.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        # Through the driver: SQLAlchemy's statement path cost more than the BEGIN itself, at
        # every transaction (each group commit of the IMAP write lane); its error is wrapped as
        # that path wraps it (a "database is locked" is SQLAlchemy's OperationalError). A connection
        # in a transaction already is a group commit's (groupcommit._transaction: it sent its own
        # BEGIN IMMEDIATE, and a session over it joins that transaction); every other comes out of
        # the pool rolled back.
        @event.listens_for(engine, "begin")
        def _begin(conn):
            dbapi = conn.connection.dbapi_connection
            if dbapi.in_transaction:
                return
            sqlite_execute(dbapi, "BEGIN" if conn.get_execution_options().get("civicmail_readonly", False)
                           else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_size=10, max_overflow=20, pool_timeout=connect_timeout,
                               connect_args=_postgresql_bounds(connect_timeout, statement_timeout, pooled), **kwargs)
        _ping_when_idle(engine, PING_IDLE)
        if not pooled:
            @event.listens_for(engine, "connect")
            def _prepared_max(dbapi_conn, _record) -> None:
                # store.prepared_statements: a hot statement has a text per partition of
                # ``message`` (leaves.py), more than psycopg's own 100 keep prepared
                dbapi_conn.prepared_max = prepared_statements
        return engine
    raise ConfigError(f"store.url: {parsed.get_backend_name()!r} is not supported (sqlite or postgresql)")


#: the key of ``Session.info`` that marks a store in external mode (store.mode = "external")
EXTERNAL_MAILBOXES = "civicmail_external_mailboxes"


class Store:
    """The engine and a session factory. One per process.

    It also owns what this process's writers share over it: the change hub (``hub``: sessions
    are told of committed changes through it) and, on SQLite, the group commit (``commits``);
    ``mail`` is the mail store over it (store/api.py)."""

    def __init__(self, url: str, busy_timeout: float = 30.0, connect_timeout: float = 5.0,
                 statement_timeout: float = 30.0, external_mailboxes: bool = False,
                 listen_url: str = "", blobs=None, keep_result_rows: int = StoreConfig.keep_result_rows,
                 prepared_statements: int = StoreConfig.prepared_statements) -> None:
        self.url = url
        #: ``url`` is a transaction-mode pooler and ``listen_url`` the database directly (config.py)
        self.listen_url = listen_url
        self.engine = make_engine(url, busy_timeout, connect_timeout, statement_timeout, pooled=bool(listen_url),
                                  prepared_statements=prepared_statements)
        #: where new message bodies go (``store/blobs.py``); None: into the content table
        self.blobs = blobs
        #: the blob collector's epoch as this process last read it (``store/bodies.py``)
        self.blob_epoch: int | None = None
        #: PostgreSQL, straight (no pooler between, whose server connections change under a client):
        #: the backend pids of this process's connections. The LISTEN thread skips the
        #: notifications they sent: their writer told ``hub`` itself after its COMMIT, and the echo
        #: cost a wake-up of that thread, of the sessions and a second look of each (pglisten)
        self.own_backends: set[int] = set()
        if self.dialect == "postgresql" and not listen_url:
            _track_backends(self.engine, self.own_backends)
        if self.dialect == "postgresql":
            from .driver import keep_cursors

            keep_cursors(self.engine, keep_result_rows)
        #: libpq parameters of a direct connection made beside the engine's (LISTEN)
        self.postgresql_bounds = _postgresql_bounds(connect_timeout, statement_timeout)
        #: store.mode = "external": the writers' sessions say so (``session.info``), and
        #: mailstore.insert_messages hands mail for people's mailboxes to the LMTP queue (external.py)
        self.external_mailboxes = external_mailboxes
        # the store rides along on every session: the one mail write path finds the blob store there
        info = {"civicmail_store": self}
        if external_mailboxes:
            info[EXTERNAL_MAILBOXES] = True
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info=info)
        #: this process's name as the owner of leases (store/leases.py): host, process id and a
        #: random part, so that a restarted process never mistakes its predecessor's lease for its own
        self.node = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
        #: told after each commit which folders changed; IMAP sessions listen (notify.py)
        self.hub = ChangeHub()
        #: SQLite: the writes of this process share commits (groupcommit.py)
        self.commits = GroupCommit(self)

    @functools.cached_property
    def mail(self):
        """The mail store over this database (``store.api.MailStore``, the SQL implementation)."""
        from .sqlstore import SqlMailStore

        return SqlMailStore(self)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @functools.cached_property
    def message_partitions(self) -> int:
        """PostgreSQL: how many hash partitions of ``message`` by account there are, as migration
        0028 makes them (read once from the catalog); 0 on SQLite, or in another shape."""
        if self.dialect != "postgresql":
            return 0
        with self.engine.connect() as conn:
            return partitions_from([tuple(r) for r in conn.exec_driver_sql(PARTITIONS_SQL)])

    def message_table(self, account_id: int) -> str:
        """The table the hot statements on one account's messages name: on PostgreSQL its leaf
        partition (store/leaves.py), else ``message``."""
        return message_table(self.message_partitions, account_id)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on leaving the block, rolled back on an exception. On
        PostgreSQL a transaction with announcements (notify.announce) sends them with its
        COMMIT, in one round trip."""
        with self.sessions() as session, session.begin():
            yield session
            if self.dialect == "postgresql":
                self._commit_announcing(session)

    def _commit_announcing(self, session: Session) -> None:
        from .notify import announcements_sql

        session.flush()
        notify = announcements_sql(session)
        if notify:  # no parameters: psycopg sends the statements as one simple query
            session.connection().connection.dbapi_connection.execute(notify + "COMMIT")
        # SQLAlchemy's COMMIT that follows finds psycopg's transaction over: it sends nothing

    @contextlib.contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction: on SQLite it does not take the write lock, so readers never
        wait for writers (WAL)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(civicmail_readonly=True)
            with Session(bind=conn) as session, session.begin():
                yield session
                session.rollback()

    def create_once(self, exists: Callable[[Session], bool], create: Callable[[Session], object]) -> bool:
        """``create`` in one transaction unless ``exists`` finds it made already; True if made now.
        Nodes starting at once (after an upgrade that added it) each find it missing; the second's
        insert then fails on a unique key once the first commits, or ``create``'s own check finds
        the first's committed row between the two (a Conflict: "already taken"), and it finds the
        first's instead (the error is raised if nothing is found)."""
        try:
            with self.session() as s:
                if exists(s):
                    return False
                create(s)
        except (IntegrityError, Conflict):
            with self.reader() as s:
                if exists(s):
                    return False
            raise
        return True

    def commit_before(self, session: Session, at: float) -> None:
        """COMMIT ``session``'s transaction only if the wall clock (``time.time()``) is before
        ``at``, else roll it back and raise StoreUnavailable.

        On PostgreSQL the database checks the deadline itself, in the same round trip as the
        COMMIT: a COMMIT held up on the way (a network stall, a frozen server) and arriving late
        is refused, never applied after its client was told to try again. (This needs the
        database's clock within a second or so of ours: NTP.) On SQLite the COMMIT is local and
        the check is made just before it."""
        if self.dialect == "postgresql":
            from .notify import announcements_sql

            session.flush()
            notify = announcements_sql(session)  # the COMMIT below is ours, not the session's (its event)
            dbapi = session.connection().connection.dbapi_connection
            try:  # no parameters: psycopg sends the statements as one simple query
                dbapi.execute(f"{notify}DO $$BEGIN IF clock_timestamp() >= to_timestamp({at!r}) THEN RAISE EXCEPTION "
                              f"'commit deadline passed' USING ERRCODE = '57014'; END IF; END$$; COMMIT")
            except Exception:
                session.rollback()
                raise
        elif time.time() >= at:
            session.rollback()
            raise StoreUnavailable("the commit's deadline passed before it could start")
        session.commit()  # on PostgreSQL the transaction is over: this only ends the session's

    def listen_connection(self):
        """A psycopg connection (autocommit) straight to the database, for LISTEN: to
        ``listen_url`` behind a transaction-mode pooler, else to ``url``; with the bounds of the
        engine's connections, so that a vanished database never hangs its holder."""
        import psycopg

        url = make_url(self.listen_url) if self.listen_url else self.engine.url
        return psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                               dbname=url.database, autocommit=True, **self.postgresql_bounds)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.commits.close()
        self.engine.dispose()
        if self.blobs is not None:
            self.blobs.close()


def open_store(config) -> Store:
    from .blobs import open_blobs

    bounds = config.store
    return Store(config.store_url, bounds.busy_timeout, bounds.connect_timeout, bounds.statement_timeout,
                 external_mailboxes=config.external_store, listen_url=bounds.listen_url,
                 blobs=open_blobs(config), keep_result_rows=bounds.keep_result_rows,
                 prepared_statements=bounds.prepared_statements)

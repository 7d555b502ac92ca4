"""Engines and sessions. Blocking calls: protocol edges run them in a thread executor."""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError, StoreUnavailable

#: TCP keepalives on PostgreSQL connections: a peer silent for this long is probed ...
KEEPALIVE_IDLE = 10
#: ... every this many seconds, and dropped after this many probes unanswered (~25 s in all)
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


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


def _postgresql_bounds(connect_timeout: float, statement_timeout: float) -> dict:
    """libpq parameters so that no wait on the database is endless: connecting, a silent or
    vanished peer (keepalives; unacknowledged data, tcp_user_timeout), a statement or an idle
    transaction on the server (a client that went away mid-transaction releases its locks)."""
    ms = int(statement_timeout * 1000)
    return {"connect_timeout": max(2, int(round(connect_timeout))),  # libpq: whole seconds, at least 2
            "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE, "keepalives_interval": KEEPALIVE_INTERVAL,
            "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": ms,
            "options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"}


def make_engine(url: str, busy_timeout: float = 30.0, connect_timeout: float = 5.0, statement_timeout: float = 30.0,
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
        if parsed.database and parsed.database != ":memory:":
            kwargs.setdefault("pool_size", 24)
            kwargs.setdefault("max_overflow", 16)
        engine = create_engine(parsed, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout))

        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN
        # (IMMEDIATE) so that two writers never deadlock upgrading a read lock.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            readonly = conn.get_execution_options().get("civicmail_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=connect_timeout,
                             connect_args=_postgresql_bounds(connect_timeout, statement_timeout), **kwargs)
    raise ConfigError(f"store.url: {parsed.get_backend_name()!r} is not supported (sqlite or postgresql)")


class Store:
    """The engine and a session factory. One per process."""

    def __init__(self, url: str, busy_timeout: float = 30.0, connect_timeout: float = 5.0,
                 statement_timeout: float = 30.0, blobs=None) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout, connect_timeout, statement_timeout)
        #: where new message bodies go (``store/blobs.py``); None: into the content table
        self.blobs = blobs
        #: the blob collector's epoch as this process last read it (``store/bodies.py``)
        self.blob_epoch: int | None = None
        #: libpq parameters of the engine's connections, for connections made beside it (LISTEN)
        self.postgresql_bounds = _postgresql_bounds(connect_timeout, statement_timeout)
        # the store rides along on every session: the one mail write path finds the blob store there
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info={"civicmail_store": self})
        #: this process's name as the owner of leases (store/leases.py): host, process id and a
        #: random part, so that a restarted process never mistakes its predecessor's lease for its own
        self.node = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on leaving the block, rolled back on an exception."""
        with self.sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction: on SQLite it does not take the write lock, so readers never
        wait for writers (WAL)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(civicmail_readonly=True)
            with Session(bind=conn) as session, session.begin():
                yield session
                session.rollback()

    def commit_before(self, session: Session, at: float) -> None:
        """COMMIT ``session``'s transaction only if the wall clock (``time.time()``) is before
        ``at``, else roll it back and raise StoreUnavailable.

        On PostgreSQL the database checks the deadline itself, in the same round trip as the
        COMMIT: a COMMIT held up on the way (a network stall, a frozen server) and arriving late
        is refused, never applied after its client was told to try again. (This needs the
        database's clock within a second or so of ours: NTP.) On SQLite the COMMIT is local and
        the check is made just before it."""
        if self.dialect == "postgresql":
            dbapi = session.connection().connection.dbapi_connection
            try:  # no parameters: psycopg sends both statements as one simple query
                dbapi.execute(f"DO $$BEGIN IF clock_timestamp() >= to_timestamp({at!r}) THEN RAISE EXCEPTION "
                              f"'commit deadline passed' USING ERRCODE = '57014'; END IF; END$$; COMMIT")
            except Exception:
                session.rollback()
                raise
        elif time.time() >= at:
            session.rollback()
            raise StoreUnavailable("the commit's deadline passed before it could start")
        session.commit()  # on PostgreSQL the transaction is over: this only ends the session's

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self.blobs is not None:
            self.blobs.close()


def open_store(config) -> Store:
    from .blobs import open_blobs

    bounds = config.store
    return Store(config.store_url, bounds.busy_timeout, bounds.connect_timeout, bounds.statement_timeout,
                 blobs=open_blobs(config))

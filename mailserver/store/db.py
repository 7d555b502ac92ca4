"""Engines and sessions. Blocking calls: protocol edges run them in a thread executor."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError


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


def make_engine(url: str, busy_timeout: float = 30.0, **kwargs) -> Engine:
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
        return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True, **kwargs)
    raise ConfigError(f"store.url: {parsed.get_backend_name()!r} is not supported (sqlite or postgresql)")


class Store:
    """The engine and a session factory. One per process."""

    def __init__(self, url: str, busy_timeout: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

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

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(config) -> Store:
    return Store(config.store_url, config.store.busy_timeout)

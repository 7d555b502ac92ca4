"""Plain SQL straight through the DBAPI cursor, for the hot paths where SQLAlchemy's per-statement
and per-value handling cost more than the queries themselves. Statements use "?" placeholders;
they are adapted to the driver's paramstyle here, in one place."""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Iterator

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from .db import Store


class RawRead:
    """A read-only transaction held straight on a pooled DBAPI connection: no ORM session, no
    SQLAlchemy Connection, no per-statement events (``raw_reader``)."""

    __slots__ = ("dbapi", "qmark")

    def __init__(self, dbapi, qmark: bool) -> None:
        self.dbapi, self.qmark = dbapi, qmark


@contextlib.contextmanager
def raw_reader(store: Store) -> Iterator[RawRead]:
    """``store.reader()`` for the reads every IMAP command repeats, at a fraction of its cost:
    opening an ORM session and SQLAlchemy's BEGIN cost more than the queries themselves. Only
    ``driver_rows`` works on it. The connection goes back to the pool (rolled back) on leaving."""
    conn = store.engine.raw_connection()
    try:
        sqlite = store.dialect == "sqlite"
        if sqlite:  # autocommit mode (db.py): a deferred BEGIN takes no lock, as store.reader()
            conn.driver_connection.execute("BEGIN")
        yield RawRead(conn.driver_connection, sqlite)
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def _cursor(session: "Session | RawRead", sql: str):
    """A DBAPI cursor in the session's transaction, and ``sql`` ("?" placeholders) in its
    driver's paramstyle."""
    if isinstance(session, RawRead):
        qmark, dbapi = session.qmark, session.dbapi
    else:
        conn = session.connection()
        qmark, dbapi = conn.dialect.paramstyle == "qmark", conn.connection.dbapi_connection
    return dbapi.cursor(), (sql if qmark else sql.replace("?", "%s"))


def driver_rows(session: "Session | RawRead", sql: str, *params) -> list[tuple]:
    """Rows of a plain SQL query ("?" placeholders), read with the DBAPI cursor in the session's
    transaction."""
    cursor, sql = _cursor(session, sql)
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def driver_stream(session: "Session | RawRead", sql: str, *params, size: int = 2000) -> Iterator[tuple]:
    """``driver_rows`` as a stream: rows fetched ``size`` at a time (memory flat in the result:
    on PostgreSQL through a server-side cursor, which a plain one is not)."""
    cursor, sql = _cursor(session, sql)
    if not (session.qmark if isinstance(session, RawRead) else session.connection().dialect.paramstyle == "qmark"):
        cursor.close()
        cursor = cursor.connection.cursor(name=f"civicmail_stream_{id(cursor):x}")
    try:
        cursor.execute(sql, params)
        while True:
            part = cursor.fetchmany(size)
            if not part:
                return
            yield from part
    finally:
        cursor.close()


def driver_execute(session: Session, sql: str, rows: list[tuple]) -> None:
    """executemany of a plain SQL statement ("?" placeholders) in the session's transaction.
    A unique or foreign key violation raises SQLAlchemy's ``IntegrityError``, as the same
    statement through SQLAlchemy would (callers catch that one, whichever driver is below:
    ``sqlite3.IntegrityError``, ``psycopg.errors.UniqueViolation``)."""
    cursor, sql = _cursor(session, sql)
    try:
        cursor.executemany(sql, rows)
    except Exception as exc:
        if isinstance(exc, session.connection().dialect.loaded_dbapi.IntegrityError):
            raise sa_exc.IntegrityError(sql, None, exc) from exc
        raise
    finally:
        cursor.close()


def driver_time(value) -> dt.datetime | None:
    """A time column read with ``driver_rows`` as an aware UTC datetime, as the ORM reads it
    (SQLite hands back the text SQLAlchemy wrote, naive and in UTC; PostgreSQL a datetime)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)

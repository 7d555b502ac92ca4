"""Plain SQL straight through the DBAPI cursor, for the hot paths where SQLAlchemy's per-statement
and per-value handling cost more than the queries themselves. Statements use "?" placeholders;
they are adapted to the driver's paramstyle here, in one place."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from .db import LAST_USED, PING_IDLE, Store
from .groupcommit import PINNED_DBAPI, session_dbapi

T = TypeVar("T")
#: the connection raw_reader uses in this thread instead of the pool's (``OwnReader``)
_here = threading.local()


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
    ``driver_rows`` works on it. The connection goes back to the pool (rolled back) on leaving;
    a thread with a connection of its own (``OwnReader``) uses that instead.

    On PostgreSQL the reads run in autocommit: under READ COMMITTED,
    PostgreSQL's level here, each statement of a transaction takes its own snapshot anyway, so a
    BEGIN and a ROLLBACK around them were two round trips that bought nothing, and the ROLLBACK
    cost a third: psycopg answers it with DEALLOCATE ALL, which also threw away the statements it
    had prepared (measured: 4 round trips for LIST, 1 of them the query)."""
    own = getattr(_here, "reader", None)
    if own is not None and own.store is store:
        with own.transaction() as read:
            yield read
        return
    conn = store.engine.raw_connection()
    dbapi = conn.driver_connection
    sqlite = store.dialect == "sqlite"
    try:
        if sqlite:  # autocommit mode (db.py): a deferred BEGIN takes no lock, as store.reader()
            dbapi.execute("BEGIN")
        else:
            dbapi.autocommit = True  # no BEGIN, no ROLLBACK (above)
        yield RawRead(dbapi, sqlite)
    finally:
        if sqlite:
            try:
                conn.rollback()
            finally:
                conn.close()
        else:
            _hand_back(conn, rollback=False)  # lost mid-read: invalidated


def read_rows(store: Store, sql: str, *params) -> list[tuple]:
    """``driver_rows`` of one statement that is the whole read: on a thread's own SQLite connection
    (``OwnReader``: the event loop's, the read and write lanes') it runs outside a transaction
    of its own, in autocommit, where a lone SELECT reads one snapshot as it would inside BEGIN
    and ROLLBACK; those two statements (and raw_reader's two context managers) cost more than
    the read of a small folder. Elsewhere, and inside a raw_reader already open, as raw_reader."""
    own = getattr(_here, "reader", None)
    if own is not None and own.store is store and isinstance(own, OwnReader) and not own._depth:
        return own.rows(sql, params)
    with raw_reader(store) as read:
        return driver_rows(read, sql, *params)


@contextlib.contextmanager
def raw_writer(store: Store) -> Iterator[Any]:
    """A pooled psycopg connection in autocommit, for a PostgreSQL write that sends its own
    BEGIN and COMMIT (``pgflags``: pipelined with its statements). Left mid-transaction (an
    error), it is rolled back; a broken one is invalidated, never handed out again. A thread
    with a connection of its own (``OwnAutocommit``: PostgreSQL's write lane) writes on that:
    no pool checkout and return a write."""
    own = getattr(_here, "reader", None)
    if isinstance(own, OwnAutocommit) and own.store is store:
        with own.transaction() as held:
            try:
                yield held.dbapi
            finally:
                _roll_back(held.dbapi)  # still in a transaction: not kept (OwnAutocommit)
        return
    conn = store.engine.raw_connection()
    dbapi = conn.driver_connection
    try:
        dbapi.autocommit = True
        yield dbapi
    finally:
        _hand_back(conn, rollback=True)


def _hand_back(conn, rollback: bool) -> None:
    """A pooled PostgreSQL connection used in autocommit (``raw_reader``, ``raw_writer``) back to
    the pool, out of autocommit as the pool's other users expect SQLAlchemy's transactions. One
    left in a transaction is rolled back if ``rollback``; one still in a transaction, or broken,
    is invalidated: closed, not back into the pool (and its error kept)."""
    dbapi = conn.driver_connection
    try:
        if rollback:
            _roll_back(dbapi)
        if _idle(dbapi):
            dbapi.autocommit = False
        else:
            conn.invalidate()
    finally:
        conn.close()


def _roll_back(dbapi) -> None:
    """A psycopg connection in autocommit left in a transaction (an error) rolled back, if it can
    be; if not, it stays in its transaction, which its owner takes as a reason not to keep it."""
    if not (dbapi.closed or dbapi.broken) and not _idle(dbapi):
        with contextlib.suppress(Exception):
            dbapi.execute("ROLLBACK")


def _idle(dbapi) -> bool:
    """A psycopg connection open, not broken and outside a transaction."""
    return not (dbapi.closed or dbapi.broken) and dbapi.info.transaction_status == 0  # 0: idle


def _driver(session: "Session | RawRead") -> tuple[bool, Any]:
    """(qmark, DBAPI connection) of the session's transaction."""
    if isinstance(session, RawRead):
        return session.qmark, session.dbapi
    return session.info.get(PINNED_DBAPI) or session_dbapi(session)


def on_sqlite(session: "Session | RawRead") -> bool:
    """Whether the session's database is SQLite (its driver's paramstyle is qmark)."""
    return _driver(session)[0]


def _cursor(session: "Session | RawRead", sql: str):
    """A DBAPI cursor in the session's transaction, and ``sql`` ("?" placeholders) in its
    driver's paramstyle."""
    qmark, dbapi = _driver(session)
    return dbapi.cursor(), (sql if qmark else sql.replace("?", "%s"))


class KeptCursor:
    """A psycopg connection's one cursor for ``driver_rows`` (None until its first read, and after
    a read that closed it), and ``limit``: a result of more rows than that is not held with the
    cursor until the next read, the cursor is closed at once (store.keep_result_rows)."""

    __slots__ = ("cursor", "limit")

    def __init__(self, limit: int) -> None:
        self.cursor = None
        self.limit = limit


#: each PostgreSQL connection of a Store's engine and its KeptCursor (weakly: it goes with it)
_kept_cursors: "weakref.WeakKeyDictionary[Any, KeptCursor]" = weakref.WeakKeyDictionary()


def keep_cursors(engine, limit: int) -> None:
    """Each PostgreSQL connection ``engine`` opens keeps a cursor for ``driver_rows``, with at most
    ``limit`` rows of its last result held until its next read (Store; store.keep_result_rows)."""

    @event.listens_for(engine, "connect")
    def _connected(dbapi_conn, _record) -> None:
        _kept_cursors[dbapi_conn] = KeptCursor(limit)


def driver_rows(session: "Session | RawRead", sql: str, *params) -> list[tuple]:
    """Rows of a plain SQL query ("?" placeholders), read with the DBAPI cursor in the session's
    transaction. On PostgreSQL the connection's one cursor is used again from read to read: a
    psycopg cursor made and closed per statement (its transformer, its adapters' map) cost
    29-31 us of CPU a one-row read against 18-25 us on a kept cursor (docs/benchmarks.md). A connection is
    used by one thread at a time, and the rows are all fetched before the next read. A connection
    no Store made (``keep_cursors``) reads on a cursor of its own each time."""
    qmark, dbapi = _driver(session)
    if qmark:
        return _rows_once(dbapi, sql, params)
    kept = _kept_cursors.get(dbapi)
    cursor = kept.cursor if kept is not None else None
    if cursor is None or cursor.closed:
        cursor = dbapi.cursor()
        if kept is not None:
            kept.cursor = cursor
    try:
        cursor.execute(sql.replace("?", "%s"), params)
        rows = cursor.fetchall()
    except BaseException:
        _drop_cursor(kept, cursor)
        raise
    if kept is None or len(rows) > kept.limit:  # its result's memory is not held by the pooled connection
        _drop_cursor(kept, cursor)
    return rows


def _rows_once(dbapi, sql: str, params: tuple) -> list[tuple]:
    """Every row of ``sql`` on a cursor of its own, closed before this returns (SQLite)."""
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _drop_cursor(kept: KeptCursor | None, cursor) -> None:
    if kept is not None:
        kept.cursor = None
    with contextlib.suppress(Exception):
        cursor.close()


def driver_stream(session: "Session | RawRead", sql: str, *params, size: int = 2000) -> Iterator[tuple]:
    """``driver_rows`` as a stream: rows fetched ``size`` at a time (memory flat in the result:
    on PostgreSQL through a server-side cursor, which a plain one is not)."""
    cursor, sql = _cursor(session, sql)
    held = contextlib.nullcontext()
    if not on_sqlite(session):
        cursor.close()
        if cursor.connection.autocommit:  # raw_reader's autocommit: a server-side cursor needs a transaction
            held = cursor.connection.transaction()
        cursor = cursor.connection.cursor(name=f"civicmail_stream_{id(cursor):x}")
    with held:
        try:
            cursor.execute(sql, params)
            while True:
                part = cursor.fetchmany(size)
                if not part:
                    return
                yield from part
        finally:
            cursor.close()


@functools.lru_cache(maxsize=64)
def unnest_insert_sql(table: str, columns: tuple[str, ...], returning: str = "") -> str:
    """PostgreSQL: an INSERT of many rows by one statement, each column one array unnested, the
    rows in their order (WITH ORDINALITY); the arrays' types are the columns' own in the schema
    (``_array_type``). Its parameters go in psycopg's binary format (``%b``; there is no "?" for
    the helpers here to turn into ``%s``): as text every element was quoted and escaped in
    Python, 250 us a content row against 10 (docs/benchmarks.md). Run it with
    ``driver_execute(session, sql, [unnest_params(rows)])``, or ``driver_rows`` for ``returning``."""
    from .models import Base

    t = Base.metadata.tables[table]
    names = ", ".join(columns)
    arrays = ", ".join(f"%b::{_array_type(t.c[c].type)}[]" for c in columns)
    return (f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) "
            f"ORDER BY n{' RETURNING ' + returning if returning else ''}")


def _array_type(column_type) -> str:
    """A column's PostgreSQL type as its array's element type: a bounded varchar as plain varchar,
    since an explicit cast to varchar(n) would cut a longer value where the column's own bound
    refuses it."""
    from sqlalchemy import String, Text
    from sqlalchemy.dialects import postgresql

    if isinstance(column_type, String) and not isinstance(column_type, Text):
        return "varchar"
    return column_type.compile(dialect=postgresql.dialect()).lower()


def unnest_params(rows: Sequence[tuple]) -> tuple[list, ...]:
    """The rows of an ``unnest_insert_sql`` as its parameters: one list a column."""
    return tuple(list(column) for column in zip(*rows))


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


class OverBudget(Exception):
    """A read on the event loop went past its budget (or met a lock): run it on a lane instead."""


class OwnReader:
    """A SQLite connection of one thread's own for raw_reader's reads, kept open: no pool
    checkout and return per read (SQLAlchemy's pool costs more than a small read's SQL).

    The read lane's threads each hold one for good (``hold``). With a ``budget`` it is the event
    loop's (imap.loop_read_budget; ``ServerContext.run_read``): ``run`` runs a read on the loop
    itself within that many SQLite virtual machine steps, past which a progress handler stops it
    and the caller hands it to the read lane (``OverBudget``), as it does at a lock (it never
    waits for one: busy_timeout 0). SQLite in WAL mode: a reader never waits for a writer.
    Only the thread that made it uses it."""

    #: SQLite VM steps between two calls of the progress handler
    STEP = 1000

    def __init__(self, store: Store, budget: int | None = None) -> None:
        self.store = store
        self.budget = budget
        self.thread = threading.get_ident()
        self._fairy = store.engine.raw_connection()  # the engine's pragmas; kept out of the pool for good
        self.dbapi = self._fairy.driver_connection
        if budget is not None:
            self.dbapi.execute("PRAGMA busy_timeout=0")
            self.dbapi.set_progress_handler(self._tick, self.STEP)
        self._read = RawRead(self.dbapi, True)
        self._spent = 0
        self._depth = 0
        #: reads ``run`` finished here, and reads it gave up (past the budget or at a lock)
        self.ran = self.given_up = 0

    def hold(self) -> "OwnReader":
        """Every raw_reader of this thread uses this connection from now on."""
        _here.reader = self
        return self

    def _tick(self) -> int:
        self._spent += self.STEP
        return self._spent > self.budget

    def usable(self) -> bool:
        return threading.get_ident() == self.thread and self._fairy is not None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` here and now, its raw_reader reads on this connection within the budget."""
        self._spent = 0
        _here.reader = self
        try:
            result = fn(*args)
        except sqlite3.Error as exc:  # interrupted past the budget, or a lock: the lane waits as it should
            self.given_up += 1
            raise OverBudget(str(exc)) from exc
        finally:
            _here.reader = None
        self.ran += 1
        return result

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RawRead]:
        """A read transaction (nested raw_readers share the outer one's)."""
        if self._depth == 0:
            self.dbapi.execute("BEGIN")
        self._depth += 1
        try:
            yield self._read
        finally:
            self._depth -= 1
            if self._depth == 0 and self.dbapi.in_transaction:
                self._spent = 0  # the ROLLBACK is never the one interrupted
                self.dbapi.execute("ROLLBACK")

    def rows(self, sql: str, params: tuple) -> list[tuple]:
        """The rows of one statement in autocommit (``read_rows``); it is finished (all rows
        fetched, the cursor closed) before this returns, so no read stays open."""
        return _rows_once(self.dbapi, sql, params)

    def close(self) -> None:
        if self._fairy is not None:
            if self.budget is not None:
                self.dbapi.set_progress_handler(None, 0)
            self._fairy.invalidate()  # closed, not back into the pool
            self._fairy = None


class OwnAutocommit:
    """A PostgreSQL connection of one thread's own for raw_reader's reads (and raw_writer's
    writes), in autocommit and kept while the thread is busy (the read lane's threads:
    ``ServerContext.reads``; the write lane's on PostgreSQL, ``ServerContext.writes``): no pool
    checkout per read, so no ping round trip and no reset on return. Idle for more than
    ``db.PING_IDLE``, it goes back to the pool, and the next read takes one out again (pinged
    there if it waited: a server restarted meanwhile costs no failed read). A connection that
    broke during a read fails that read and is dropped. Only the thread that made it uses it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._fairy = None
        self._depth = 0
        self._used = 0.0

    def hold(self) -> "OwnAutocommit":
        """Every raw_reader of this thread uses this connection from now on."""
        _here.reader = self
        return self

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RawRead]:
        """The connection, for one read (nested raw_readers share it)."""
        if self._fairy is not None and not self._depth and time.monotonic() - self._used > PING_IDLE:
            self._give_back()
        if self._fairy is None:
            self._fairy = self.store.engine.raw_connection()
            self._fairy.driver_connection.autocommit = True
        dbapi = self._fairy.driver_connection
        self._depth += 1
        try:
            yield RawRead(dbapi, False)
        finally:
            self._depth -= 1
            self._used = time.monotonic()
            if not self._depth and not _idle(dbapi):
                self.close()  # a connection in a transaction, or broken, is not kept

    def _give_back(self) -> None:
        fairy, self._fairy = self._fairy, None
        fairy.driver_connection.autocommit = False  # as the pool's other users expect it
        fairy.info[LAST_USED] = self._used  # idle since then: pinged at its next checkout
        fairy.close()

    def close(self) -> None:
        if self._fairy is not None:
            self._fairy.invalidate()  # closed, not back into the pool
            self._fairy = None

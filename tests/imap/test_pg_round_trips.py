"""Round trips to PostgreSQL per IMAP command (issue 13: PostgreSQL at 0.8x of SQLite), counted
on the wire: libpq's own trace of every connection the server's engine hands out, over a real
session on a real PostgreSQL. A cheap read is its statements and nothing else (no pre-ping, no
BEGIN, no ROLLBACK, no DEALLOCATE ALL); a write is not pinged when its connection was just used,
and its NOTIFY for the other nodes rides with its COMMIT.
And what the pings were there for still holds: connections the server dropped while they waited
in the pool (a restart, a pooler) are never handed to a command."""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from mailserver.provision import prepare
from mailserver.store.db import PING_IDLE

from tests.conftest import PG_ADMIN, make_config

from .conftest import Running, start_server

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %d\r\n\r\nbody\r\n"
#: a message of libpq's trace: "F" (sent) or "B" (received), its length, its type, its text
_MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)\t? ?(.*)$")


class WireTrace:
    """libpq's trace of every connection the engine hands out from now on, into one file."""

    def __init__(self, engine, path: Path) -> None:
        self.path = path
        self.file = open(path, "w")  # noqa: SIM115  (libpq writes to it until the server stops)

        @event.listens_for(engine, "checkout")
        def _trace(dbapi_conn, record, _proxy) -> None:
            if not record.info.get("traced"):
                from psycopg.pq import Trace

                dbapi_conn.pgconn.trace(self.file.fileno())
                dbapi_conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
                record.info["traced"] = True

    def mark(self) -> int:
        return self.path.stat().st_size

    def since(self, mark: int) -> list[tuple[str, str, str]]:
        """(direction, message type, text) of the messages between the server and PostgreSQL
        since ``mark``."""
        with open(self.path) as f:
            f.seek(mark)
            return [m.groups() for m in map(_MESSAGE.match, f.read().splitlines()) if m]


def round_trips(wire: list[tuple[str, str, str]]) -> int:
    """Every exchange ends with PostgreSQL's ReadyForQuery, read before psycopg returns (so it is
    in the trace before the IMAP answer goes out; a Sync sent may be written to it later)."""
    return sum(1 for way, kind, _ in wire if way == "B" and kind == "ReadyForQuery")


def queries(wire: list[tuple[str, str, str]]) -> list[str]:
    return [text for way, kind, text in wire if way == "F" and kind in ("Query", "Parse")]


@pytest.fixture
def pg_server(tmp_path, pg_url):
    config = make_config(tmp_path / "data", store_url=pg_url)
    prepare(config)
    running = start_server(config, watcher_on=False)  # no poll of the database in the counts
    trace = WireTrace(running.ctx.store.engine, tmp_path / "wire.trace")
    yield running, trace, pg_url
    running._stop()  # type: ignore[attr-defined]
    trace.file.close()


def command(raw, tag: str, text: str, trace: WireTrace) -> tuple[list[bytes], list[tuple[str, str]]]:
    mark = trace.mark()
    lines = raw.command(tag, text)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines, trace.since(mark)


@contextlib.contextmanager
def selected(running: Running, trace: WireTrace, count: int) -> Iterator:
    """A session with INBOX selected, ``count`` messages appended first (by another session)."""
    client = running.client()
    try:
        for n in range(count):
            assert client.append("INBOX", None, None, RAW % n)[0] == "OK"
    finally:
        client.logout()
    raw = running.raw()
    try:
        command(raw, "s", "SELECT INBOX", trace)
        yield raw
    finally:
        raw.close()


def test_the_cheap_reads_of_a_selected_folder_are_their_statements_only(pg_server):
    running, trace, _ = pg_server
    with selected(running, trace, 3) as raw:
        for n in range(3):  # the same again: nothing is set up anew per command
            lines, sent = command(raw, f"f{n}", "UID FETCH 1:* (FLAGS)", trace)
            assert sum(b" FETCH (" in ln for ln in lines) == 3
            assert round_trips(sent) == 1, sent
            assert len(queries(sent)) <= 1, sent  # parsed once, then run prepared (Bind only)
        _, sent = command(raw, "l", 'LIST "" "*"', trace)
        assert round_trips(sent) == 1, sent
        command(raw, "w1", "UID STORE 1 +FLAGS.SILENT (\\Seen)", trace)
        command(raw, "w2", "UID STORE 2 +FLAGS.SILENT (\\Deleted)", trace)
        lines, sent = command(raw, "st", "STATUS INBOX (MESSAGES UNSEEN DELETED UIDNEXT)", trace)
        assert b"(MESSAGES 3 UNSEEN 2 DELETED 1 UIDNEXT 4)" in lines[0], lines
        assert round_trips(sent) == 1, sent
        for text in queries(sent):
            assert not re.match(r'^"(;|BEGIN|ROLLBACK|COMMIT|DEALLOCATE)', text), sent


def test_a_write_on_a_connection_just_used_is_not_pinged(pg_server):
    running, trace, _ = pg_server
    with selected(running, trace, 2) as raw:
        command(raw, "w0", "UID STORE 1 +FLAGS (\\Seen)", trace)  # the connections are in the pool now
        lines, sent = command(raw, "w1", "UID STORE 2 +FLAGS (\\Flagged)", trace)
        assert any(b"FLAGS (\\Flagged" in ln for ln in lines), lines
        texts = queries(sent)
        assert '";"' not in texts, texts  # SQLAlchemy's pre-ping
        assert texts.count('"BEGIN"') == 1, texts
        # the other nodes' notice goes with the COMMIT, in one simple query
        commits = [t for t in texts if t.endswith('COMMIT"')]
        assert len(commits) == 1 and "pg_notify(c, p) FROM unnest('{civicmail_f" in commits[0], texts
        assert sum("pg_notify" in t for t in texts) == 1, texts
        assert '"ROLLBACK"' not in texts and '"DEALLOCATE ALL"' not in texts, texts


def test_connections_dropped_while_they_wait_are_never_handed_to_a_command(pg_server):
    running, trace, pg_url = pg_server
    with selected(running, trace, 2) as raw:
        command(raw, "w", "UID STORE 1 +FLAGS (\\Seen)", trace)
        # the server ends every connection of this database (a restart looks the same to us)
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                ended = conn.exec_driver_sql(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %(db)s AND pid <> pg_backend_pid()) t",
                    {"db": make_url(pg_url).database}).scalar()
        finally:
            admin.dispose()
        assert ended >= 1  # the read lane's connection, the pool's
        time.sleep(PING_IDLE * 1.5)  # they wait past the ping threshold (not timed: a set-up)
        lines, _ = command(raw, "f", "UID FETCH 1:* (FLAGS)", trace)
        assert sum(b" FETCH (" in ln for ln in lines) == 2, lines
        lines, _ = command(raw, "w2", "UID STORE 2 +FLAGS (\\Flagged)", trace)
        assert any(b"FLAGS (\\Flagged" in ln for ln in lines), lines
        lines, _ = command(raw, "st", "STATUS INBOX (MESSAGES)", trace)
        assert b"MESSAGES 2" in lines[0], lines

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
from mailserver.store.notify import NOTIFY_SQL, notify_arrays

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


def exchanges(wire: list[tuple[str, str, str]]) -> int:
    """Round trips counted on the sending side: each Sync and each simple Query is answered by
    one ReadyForQuery, however many statements a pipeline sent before its Sync. (The answers'
    count can lag: libpq may read a command's last ReadyForQuery only when its connection is
    next used, after the IMAP answer went out.)"""
    return sum(1 for way, kind, _ in wire if way == "F" and kind in ("Sync", "Query"))


def queries(wire: list[tuple[str, str, str]]) -> list[str]:
    return [text for way, kind, text in wire if way == "F" and kind in ("Query", "Parse")]


#: a Parse's text in the trace: the statement's name, its SQL, its parameters' count and types
_PARSE = re.compile(r'^"[^"]*" "(.*)" \d+( \w+)*$')


def statements(wire: list[tuple[str, str, str]]) -> list[str]:
    """The SQL sent, one statement an item, whether by a simple Query (split at "; ") or a Parse."""
    out = []
    for way, kind, text in wire:
        if way == "F" and kind == "Query":
            out += text[1:-1].split("; ")
        elif way == "F" and kind == "Parse":
            out.append(_PARSE.match(text).group(1))
    return out


def together(wire: list[tuple[str, str, str]], first: str, then: str) -> bool:
    """Whether a statement containing ``first`` and a later one containing ``then`` went in
    the same round trip (no ReadyForQuery between them)."""
    seen = False
    for way, kind, text in wire:
        if way == "B" and kind == "ReadyForQuery":
            seen = False
        elif way == "F" and kind in ("Query", "Parse"):
            for sql in statements([(way, kind, text)]):
                if seen and then in sql:
                    return True
                seen = seen or first in sql
    return False


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
        for text in statements(sent):
            assert not re.match(r"^(;|BEGIN|ROLLBACK|COMMIT|DEALLOCATE)", text), sent


def test_a_write_on_a_connection_just_used_is_not_pinged(pg_server):
    running, trace, _ = pg_server
    with selected(running, trace, 2) as raw:
        command(raw, "w0", "UID STORE 1 +FLAGS (\\Seen)", trace)  # the connections are in the pool now
        lines, sent = command(raw, "w1", "UID STORE 2 +FLAGS (\\Flagged)", trace)
        assert any(b"FLAGS (\\Flagged" in ln for ln in lines), lines
        texts = statements(sent)
        assert ";" not in texts, texts  # SQLAlchemy's pre-ping
        assert texts.count("BEGIN") == 1, texts
        # the other nodes' notice goes with the COMMIT, in the same round trip, before it
        assert sum("pg_notify" in t for t in texts) == 1, texts
        assert together(sent, "pg_notify", "COMMIT"), sent
        assert "ROLLBACK" not in texts and "DEALLOCATE ALL" not in texts, texts


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


def test_a_store_is_two_round_trips_and_no_look_when_it_saw_no_other_change(pg_server):
    """BEGIN, the folder's MODSEQ and the messages read in one round trip; the messages
    written, the other nodes told and the COMMIT in a second (six before: psycopg's BEGIN,
    each statement and the COMMIT apart). The look after it is left out when the STORE saw
    no other change and none was announced since (session.py ``_look_after``); a STORE that
    changes nothing still looks (a third). What STORE does is unchanged: keywords, MODSEQ,
    UNCHANGEDSINCE, a STORE that changes nothing."""
    import psycopg

    from mailserver.store.notify import notifications

    running, trace, pg_url = pg_server
    with selected(running, trace, 3) as raw:
        command(raw, "e", "ENABLE CONDSTORE", trace)
        lines, _ = command(raw, "h0", "STATUS INBOX (HIGHESTMODSEQ)", trace)
        before = int(re.search(rb"HIGHESTMODSEQ (\d+)", lines[0]).group(1))
        looker = create_engine(pg_url)  # not the server's engine: its connections are traced
        try:
            with looker.connect() as conn:
                folder_id = conn.exec_driver_sql("SELECT id FROM folder WHERE name = 'INBOX' AND account_id = %(a)s",
                                                 {"a": running.users[0][1]}).scalar()
        finally:
            looker.dispose()
        (channel, payload), = notifications([str(folder_id)])
        listener = psycopg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False),
                                   autocommit=True)
        try:
            listener.execute(f"LISTEN {channel}")
            lines, sent = command(raw, "w1", "UID STORE 1 +FLAGS ($Work \\Flagged)", trace)
            assert exchanges(sent) == 2, sent
            fetched = [ln for ln in lines if b" FETCH (" in ln]
            assert fetched == [f"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent $Work) MODSEQ ({before + 1}))\r\n"
                               .encode()], lines
            heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
            assert payload in heard, heard  # the other nodes are told, at the COMMIT
        finally:
            listener.close()
        lines, sent = command(raw, "w2", "UID STORE 2:3 +FLAGS.SILENT (\\Deleted)", trace)
        assert exchanges(sent) == 2, sent
        assert [ln for ln in lines if b"MODSEQ" in ln] == [
            f"* {n} FETCH (UID {n} MODSEQ ({before + 2}))\r\n".encode() for n in (2, 3)], lines
        # nothing changes: the MODSEQ taken is given back, HIGHESTMODSEQ stays
        lines, sent = command(raw, "w3", "UID STORE 1 +FLAGS ($Work)", trace)
        assert exchanges(sent) == 3, sent
        assert any(f"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent $Work) MODSEQ ({before + 1}))".encode() in ln
                   for ln in lines), lines
        lines, _ = command(raw, "h1", "STATUS INBOX (HIGHESTMODSEQ)", trace)
        assert f"HIGHESTMODSEQ {before + 2})".encode() in lines[0], lines
        # UNCHANGEDSINCE below the message's MODSEQ: refused, the flags kept
        lines = raw.command("w4", f"UID STORE 1 (UNCHANGEDSINCE {before}) -FLAGS (\\Flagged)")
        assert lines[-1].startswith(b"w4 OK [MODIFIED 1]"), lines
        lines, _ = command(raw, "f", "UID FETCH 1:3 (FLAGS)", trace)
        assert b"\\Flagged" in lines[0] and all(b"\\Deleted" in ln for ln in lines[1:3]), lines
        assert len(lines) == 4, lines


def test_select_reads_its_folder_and_messages_in_one_round_trip_and_one_snapshot(pg_server):
    """The folder's row and its message list in one statement (two round trips before, then
    four statements pipelined in a READ ONLY transaction); what SELECT answers is unchanged,
    and a folder that is not there is a NO."""
    running, trace, _ = pg_server
    with selected(running, trace, 3) as raw:
        command(raw, "w", "UID STORE 2 +FLAGS.SILENT (\\Seen $Later)", trace)
        lines, sent = command(raw, "s2", "SELECT INBOX", trace)
        assert exchanges(sent) == 1, sent
        assert b"* 3 EXISTS\r\n" in lines and b"* OK [UNSEEN 1] first unseen\r\n" in lines, lines
        assert any(ln.startswith(b"* FLAGS (") and b"$Later" in ln for ln in lines), lines
        texts = statements(sent)
        assert len(texts) == 1 and "array_agg(uid)" in texts[0], texts
        lines = raw.command("s3", "SELECT Nowhere")
        assert lines[-1].startswith(b"s3 NO"), lines  # and nothing is selected (RFC 3501 6.3.1)
        command(raw, "s4", "SELECT INBOX", trace)  # the connection still serves
        lines, _ = command(raw, "f", "UID FETCH 1:* (FLAGS)", trace)
        assert sum(b" FETCH (" in ln for ln in lines) == 3, lines


def _folder_and_contents(pg_url: str, account_id: int) -> tuple[int, int, int]:
    """INBOX's id, and the content rows and tombstones of the database, read on a connection
    of the test's own (the server's are traced)."""
    looker = create_engine(pg_url)
    try:
        with looker.connect() as conn:
            folder_id = conn.exec_driver_sql("SELECT id FROM folder WHERE name = 'INBOX' AND account_id = %(a)s",
                                             {"a": account_id}).scalar()
            contents = conn.exec_driver_sql("SELECT count(*) FROM content").scalar()
            tombstones = conn.exec_driver_sql("SELECT count(*) FROM expunged WHERE folder_id = %(f)s",
                                              {"f": folder_id}).scalar()
    finally:
        looker.dispose()
    return folder_id, contents, tombstones


@contextlib.contextmanager
def listening(pg_url: str, folder_id: int) -> Iterator:
    """A connection of another node's LISTENing to the folder's channel, and the payload it hears."""
    import psycopg

    from mailserver.store.notify import notifications

    (channel, payload), = notifications([str(folder_id)])
    listener = psycopg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False),
                               autocommit=True)
    try:
        listener.execute(f"LISTEN {channel}")
        yield listener, payload
    finally:
        listener.close()


def _modseq_and_validity(raw, trace: WireTrace) -> tuple[int, int]:
    """INBOX's HIGHESTMODSEQ and UIDVALIDITY, asked by STATUS."""
    lines, _ = command(raw, "h", "STATUS INBOX (HIGHESTMODSEQ UIDVALIDITY)", trace)
    return tuple(int(re.search(rb"%s (\d+)" % item, lines[0]).group(1)) for item in (b"HIGHESTMODSEQ", b"UIDVALIDITY"))


def test_an_expunge_is_two_round_trips_and_no_look_when_it_saw_no_other_change(pg_server):
    """The folder's MODSEQ raised and the \\Deleted messages deleted in one round trip; the
    counters, the tombstones, the contents released, the other nodes told and the COMMIT in a
    second (eleven before); no look after it when no other write came between the session's last
    look and this one (``api.Expunged``: the session's UIDs less those removed; the look was a
    third round trip, and is made when the EXPUNGE removed nothing). What EXPUNGE
    does is unchanged: the answers, HIGHESTMODSEQ, QRESYNC's VANISHED, the contents gone, an
    EXPUNGE that finds nothing."""
    running, trace, pg_url = pg_server
    with selected(running, trace, 4) as raw:
        command(raw, "q", "ENABLE QRESYNC", trace)
        command(raw, "d", "UID STORE 2:3 +FLAGS.SILENT (\\Deleted)", trace)
        before, uidvalidity = _modseq_and_validity(raw, trace)
        folder_id, contents, tombstones = _folder_and_contents(pg_url, running.users[0][1])
        with listening(pg_url, folder_id) as (listener, payload):
            lines, sent = command(raw, "x", "EXPUNGE", trace)
            assert exchanges(sent) == 2, sent
            assert lines[:-1] == [b"* VANISHED 2:3\r\n"], lines  # QRESYNC enabled: VANISHED, not EXPUNGE
            assert together(sent, "pg_notify", "COMMIT"), sent
            heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
            assert payload in heard, heard
        assert _folder_and_contents(pg_url, running.users[0][1])[1:] == (contents - 2, tombstones + 2)
        lines, _ = command(raw, "h1", "STATUS INBOX (MESSAGES HIGHESTMODSEQ)", trace)
        assert f"(MESSAGES 2 HIGHESTMODSEQ {before + 1})".encode() in lines[0], lines
        # nothing left to expunge: nothing answered, the MODSEQ given back
        lines, sent = command(raw, "x2", "EXPUNGE", trace)
        assert lines[:-1] == [] and exchanges(sent) == 3, (lines, sent)  # its look too
        lines, _ = command(raw, "h2", "STATUS INBOX (HIGHESTMODSEQ)", trace)
        assert f"HIGHESTMODSEQ {before + 1})".encode() in lines[0], lines
    other = running.raw()
    try:
        command(other, "q", "ENABLE QRESYNC", trace)
        lines, _ = command(other, "s", f"SELECT INBOX (QRESYNC ({uidvalidity} {before}))", trace)
        assert b"* VANISHED (EARLIER) 2:3\r\n" in lines and b"* 2 EXISTS\r\n" in lines, lines
        lines, _ = command(other, "f", "UID FETCH 1:* (FLAGS)", trace)
        assert [ln.split(b" FLAGS")[0] for ln in lines[:-1]] == [b"* 1 FETCH (UID 1", b"* 2 FETCH (UID 4"], lines
    finally:
        other.close()


def _append(raw, tag: str, mailbox: str, message: bytes, trace: WireTrace) -> tuple[list[bytes], list]:
    """APPEND over the wire (a synchronising literal): every line up to the tagged reply, and
    the messages to and from PostgreSQL once the literal was sent."""
    raw.send(f"{tag} APPEND {mailbox} (\\Flagged $Work) {{{len(message)}}}\r\n".encode())
    assert raw.line().startswith(b"+"), "no continuation"
    mark = trace.mark()
    raw.send(message + b"\r\n")
    lines = []
    while not lines or not lines[-1].startswith(tag.encode() + b" "):
        lines.append(raw.line())
    return lines, trace.since(mark)


def test_an_append_is_two_round_trips_and_no_look_when_it_saw_no_other_change(pg_server):
    """The folder's row moved on, the content, its sort fields and the message written and the
    quota read in one round trip; the \\Recent mark, the other nodes told and the COMMIT in a
    second (eleven before); no look after it, as the folder's MODSEQ says no other write came
    between the session's last look and this one (``api.AppendedMany.own``; the look was a
    third round trip). What APPEND does is unchanged: APPENDUID,
    EXISTS and RECENT, the flags, the body, HIGHESTMODSEQ, the quota refused (nothing stored)
    and a folder that is not there."""
    running, trace, pg_url = pg_server
    message = RAW % 9
    with selected(running, trace, 2) as raw:
        command(raw, "e", "ENABLE CONDSTORE", trace)
        before, uidvalidity = _modseq_and_validity(raw, trace)
        folder_id, contents, _ = _folder_and_contents(pg_url, running.users[0][1])
        with listening(pg_url, folder_id) as (listener, payload):
            lines, sent = _append(raw, "a", "INBOX", message, trace)
            # the new keyword announced, and the message \Recent in this session (with the two it selected)
            assert lines[-3:] == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n",
                                  f"a OK [APPENDUID {uidvalidity} 3] completed\r\n".encode()], lines
            assert lines[0].startswith(b"* FLAGS (") and b"$Work" in lines[0], lines
            assert exchanges(sent) == 2, sent
            assert together(sent, "pg_notify", "COMMIT"), sent
            heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
            assert payload in heard, heard
        assert _folder_and_contents(pg_url, running.users[0][1])[1] == contents + 1
        lines, _ = command(raw, "f", "UID FETCH 3 (FLAGS MODSEQ BODY.PEEK[])", trace)
        assert lines[0].startswith(f"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent $Work) MODSEQ ({before + 1}) "
                                   f"BODY[] {{{len(message)}}}".encode()), lines
        assert b"".join(lines[1:-2]) == message and lines[-2] == b")\r\n", lines
        lines, _ = command(raw, "h1", "STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)", trace)
        assert f"(MESSAGES 3 UIDNEXT 4 HIGHESTMODSEQ {before + 1})".encode() in lines[0], lines
        # over the quota: refused, and nothing of it stored
        looker = create_engine(pg_url)
        try:
            with looker.begin() as conn:
                conn.exec_driver_sql("UPDATE account SET quota_bytes = 1 WHERE id = %(a)s", {"a": running.users[0][1]})
        finally:
            looker.dispose()
        lines, _ = _append(raw, "q", "INBOX", message, trace)
        assert lines[-1].startswith(b"q NO [OVERQUOTA]"), lines
        lines, _ = _append(raw, "n", "Nowhere", message, trace)
        assert lines[-1].startswith(b"n NO [TRYCREATE]"), lines
        lines, _ = command(raw, "h2", "STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)", trace)
        assert f"(MESSAGES 3 UIDNEXT 4 HIGHESTMODSEQ {before + 1})".encode() in lines[0], lines
        assert _folder_and_contents(pg_url, running.users[0][1])[1] == contents + 1
    other = running.raw()
    try:  # the \Recent mark was claimed by the session that had the folder selected
        lines, _ = command(other, "s", "SELECT INBOX", trace)
        assert b"* 3 EXISTS\r\n" in lines and b"* 0 RECENT\r\n" in lines, lines
    finally:
        other.close()


def test_a_fetch_of_a_small_body_is_one_round_trip(pg_server):
    """A few small messages' bodies: their rows in one round trip (two before: the size
    first); a range over the bound (a big message) still answered, by the heavy lane after
    its rows (none within the bound) and then the size of the range told it so."""
    running, trace, _ = pg_server
    big = b"From: a@x.example\r\nSubject: big\r\n\r\n" + b"x" * 70 * 1024 + b"\r\n"
    client = running.client()
    try:
        assert client.append("INBOX", None, None, big)[0] == "OK"
    finally:
        client.logout()
    with selected(running, trace, 2) as raw:
        lines, sent = command(raw, "b", "UID FETCH 2 (BODY.PEEK[])", trace)
        assert exchanges(sent) == 1, sent
        assert b"".join(lines[1:-2]) == RAW % 0 and lines[0].startswith(b"* 2 FETCH (UID 2 BODY[] {"), lines
        lines, sent = command(raw, "g", "UID FETCH 1 (BODY.PEEK[])", trace)
        assert exchanges(sent) == 3, sent
        assert b"".join(lines[1:-2]) == big, lines[0]


def test_a_node_skips_the_echo_of_its_own_notifications_and_hears_the_others(tmp_path, pg_url):
    """A write's pg_notify comes back to its own node's LISTEN; its writer told the sessions
    there already, so the echo is skipped: no wake-up, no second look at the next command. A
    notification from another node's connection is heard, and the session looks."""
    import psycopg

    config = make_config(tmp_path / "data", store_url=pg_url)
    prepare(config)
    running = start_server(config)  # with the LISTEN thread
    trace = WireTrace(running.ctx.store.engine, tmp_path / "wire.trace")
    try:
        figures = running.ctx.metrics.watcher.listener.figures
        with selected(running, trace, 1) as raw:
            # the LISTEN on INBOX's channel took effect; then a write of the session's own
            until = time.monotonic() + 10
            while not figures.channels and time.monotonic() < until:
                time.sleep(0.05)
            received, own = figures.received, figures.own
            command(raw, "w", "UID STORE 1 +FLAGS (\\Seen)", trace)
            while figures.received == received and time.monotonic() < until:
                time.sleep(0.05)
            assert (figures.received, figures.own) == (received + 1, own + 1)
            # STATUS reads its counts: one round trip, no look after it (the STORE's own was the last)
            _, sent = command(raw, "s1", "STATUS INBOX (MESSAGES)", trace)
            assert exchanges(sent) == 1, sent
            # another node's change: heard, and looked at
            folder_id = _folder_and_contents(pg_url, running.users[0][1])[0]
            other = psycopg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False),
                                    autocommit=True)
            try:
                other.execute("UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = %s", (folder_id,))
                other.execute("UPDATE message SET flags = flags | 2, modseq = f.highestmodseq FROM folder f "
                              "WHERE f.id = message.folder_id AND f.id = %s", (folder_id,))
                other.execute(NOTIFY_SQL.format("%s", "%s"), notify_arrays([str(folder_id)]))
            finally:
                other.close()
            while figures.received == received + 1 and time.monotonic() < until:
                time.sleep(0.05)
            assert (figures.received, figures.own) == (received + 2, own + 1)
            lines, sent = command(raw, "s2", "STATUS INBOX (MESSAGES)", trace)
            assert exchanges(sent) == 2 and any(b"FETCH (UID 1 FLAGS (\\Seen \\Answered" in ln for ln in lines), lines
    finally:
        running._stop()  # type: ignore[attr-defined]
        trace.file.close()


def test_writes_on_a_lane_of_their_own_answer_alike(tmp_path, pg_url):
    """imap.pg_write_threads: the writes and their looks on a lane of two threads, each write
    its own transaction: the same answers and round trips as on the store threads, each write
    on its thread's own connection (no pool checkout)."""
    config = make_config(tmp_path / "data", "imap.pg_write_threads=2", store_url=pg_url)
    prepare(config)
    running = start_server(config, watcher_on=False)
    trace = WireTrace(running.ctx.store.engine, tmp_path / "wire.trace")
    checkouts = []
    event.listen(running.ctx.store.engine, "checkout", lambda *_: checkouts.append(1))
    try:
        assert running.ctx.writes is not None
        with selected(running, trace, 3) as raw:
            _warm(running)
            checkouts.clear()
            lines, sent = command(raw, "w", "UID STORE 2:3 +FLAGS (\\Deleted)", trace)
            assert exchanges(sent) == 2 and sum(b"\\Deleted" in ln for ln in lines) == 2, (lines, sent)
            lines, sent = command(raw, "x", "EXPUNGE", trace)
            assert exchanges(sent) == 2 and lines[:-1] == [b"* 3 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"], (lines, sent)
            lines, sent = _append(raw, "a", "INBOX", RAW % 7, trace)
            assert exchanges(sent) == 2 and b"* 2 EXISTS\r\n" in lines and b"APPENDUID" in lines[-1], (lines, sent)
            assert not checkouts
    finally:
        running._stop()  # type: ignore[attr-defined]
        trace.file.close()


def _warm(running: Running) -> None:
    """Each of the write lane's two threads takes its connection of its own (on its first use)."""
    import asyncio
    import threading

    from mailserver.store.driver import raw_reader

    both = threading.Barrier(2, timeout=30)

    def read() -> None:
        with raw_reader(running.ctx.store):
            both.wait()

    async def on_both() -> None:
        lane = running.ctx.writes
        await asyncio.gather(lane.run(read, owner=1), lane.run(read, owner=2))

    asyncio.run_coroutine_threadsafe(on_both(), running.loop).result(60)

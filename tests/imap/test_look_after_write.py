"""A write that saw no other change leaves out its look at the selected folder (session.py
``_look_after``); what another session writes to that folder right after it must still reach
the session, at its next command or in IDLE, on both engines. The servers run without the
FolderWatcher (its poll would hide a lost wake-up), so only the change hub tells."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from mailserver.store.api import FLAGGED
from mailserver.store.notify import ChangeHub

from .conftest import start_server

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %d\r\n\r\nbody\r\n"


@pytest.fixture
def hub_only(config):
    running = start_server(config, watcher_on=False)
    yield running
    running._stop()  # type: ignore[attr-defined]


def ok(raw, tag: str, text: str) -> list[bytes]:
    lines = raw.command(tag, text)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


def append(raw, tag: str, message: bytes) -> list[bytes]:
    raw.send(f"{tag} APPEND INBOX {{{len(message)}}}\r\n".encode())
    assert raw.line().startswith(b"+ ")
    raw.send(message + b"\r\n")
    lines = []
    while not lines or not lines[-1].startswith(tag.encode() + b" "):
        lines.append(raw.line())
        assert lines[-1], lines  # the server closed
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


@contextlib.contextmanager
def two_sessions(running, count: int) -> Iterator[tuple]:
    """Sessions A and B with INBOX selected, ``count`` messages appended first."""
    a, b = running.raw(), running.raw()
    try:
        for n in range(count):
            append(b, f"p{n}", RAW % n)
        for raw in (a, b):
            ok(raw, "e", "ENABLE IMAP4rev2")  # no \Recent in the FLAGS below
            ok(raw, "s", "SELECT INBOX")
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_change_right_after_a_store_is_told_at_the_next_command(hub_only):
    with two_sessions(hub_only, 3) as (a, b):
        for n, (flag, uid) in enumerate((("\\Flagged", 2), ("\\Answered", 3), ("$Work", 1))):
            lines = ok(a, f"a{n}", f"UID STORE {n + 1} +FLAGS.SILENT (\\Seen)")
            assert lines == [], lines  # nothing but its own change: nothing to tell
            ok(b, f"b{n}", f"UID STORE {uid} +FLAGS ({flag})")
            # STATUS looks only when a change is pending: it must be, from B's announcement
            lines = ok(a, f"c{n}", "STATUS INBOX (MESSAGES)")
            told = [ln for ln in lines if b" FETCH " in ln]
            assert len(told) == 1 and f"UID {uid} FLAGS".encode() in told[0] and flag.encode() in told[0], lines
        assert ok(a, "d", "STATUS INBOX (MESSAGES)") == [b'* STATUS "INBOX" (MESSAGES 3)\r\n']


def test_a_change_right_after_an_append_is_told_at_the_next_command(hub_only):
    with two_sessions(hub_only, 1) as (a, b):
        lines = append(a, "a1", RAW % 7)
        assert b"* 2 EXISTS\r\n" in lines, lines
        assert b"* 2 EXISTS\r\n" in ok(b, "n1", "NOOP")  # B learns of the new message
        ok(b, "b1", "UID STORE 2 +FLAGS (\\Flagged)")
        lines = ok(a, "c1", "STATUS INBOX (MESSAGES)")
        assert any(b"FETCH (UID 2 FLAGS (\\Flagged))" in ln for ln in lines), lines


def test_an_append_after_a_change_not_yet_told_tells_both(hub_only):
    """An APPEND tells its own message without a look only when no other change came first
    (``api.AppendedMany.own``); here B's message, not yet told to A, comes with it."""
    with two_sessions(hub_only, 1) as (a, b):
        append(b, "b1", RAW % 5)
        lines = append(a, "a1", RAW % 7)
        assert b"* 3 EXISTS\r\n" in lines, lines
        fetched = ok(a, "f1", "UID FETCH 1:* (UID)")
        assert [ln.split(b"(")[1] for ln in fetched] == [b"UID 1)\r\n", b"UID 2)\r\n", b"UID 3)\r\n"], fetched


def test_an_expunge_after_expunges_not_yet_told_tells_them_all(hub_only):
    """An EXPUNGE tells what it removed from the session's own view only when no other change
    came first (``api.Expunged``); here B's expunge, not yet told to A, is told with A's."""
    with two_sessions(hub_only, 4) as (a, b):
        ok(a, "a1", "UID STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        ok(b, "b1", "UID STORE 4 +FLAGS.SILENT (\\Deleted)")
        ok(b, "b2", "UID EXPUNGE 4")
        lines = ok(a, "a2", "EXPUNGE")
        assert lines == [b"* 4 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"], lines
        fetched = ok(a, "f1", "UID FETCH 1:* (UID)")
        assert fetched == [b"* 1 FETCH (UID 2)\r\n"], fetched


def test_a_change_right_after_a_store_reaches_idle(hub_only):
    with two_sessions(hub_only, 2) as (a, b):
        ok(a, "a1", "UID STORE 1 +FLAGS.SILENT (\\Seen)")
        ok(b, "b1", "UID STORE 2 +FLAGS (\\Flagged)")  # before A's IDLE: told by its first look
        a.send(b"i IDLE\r\n")
        assert a.line().startswith(b"+ ")
        line = a.line()
        assert b"FETCH (UID 2 FLAGS (\\Flagged))" in line, line
        ok(b, "b2", "UID STORE 1 +FLAGS (\\Answered)")  # during it: told at once
        line = a.line()
        assert b"FETCH (UID 1 FLAGS (\\Seen \\Answered))" in line, line
        a.send(b"DONE\r\n")
        assert a.line() == b"i OK IDLE terminated\r\n"


def test_a_batch_moves_a_folders_version_once_for_each_writer_in_it():
    """The write lane's batch (SQLite) announces when it commits; a session that wrote in it
    must see another writer's change of the same folder in the count (``ChangeHub.held``)."""
    hub = ChangeHub()
    hub.subscribe(5, lambda _fid: None)
    with hub.held():
        hub.changed([5])
        hub.changed([5, 6])
        assert hub.version(5) == 0  # nothing told before the COMMIT
    assert hub.version(5) == 2
    with hub.held():
        hub.changed([5, 5])  # one writer naming the folder twice is one change
    assert hub.version(5) == 3
    hub.changed([5])
    assert hub.version(5) == 4


def test_another_write_in_the_same_commit_is_told(hub_only):
    """Another writer's change of the folder that commits with the session's STORE (the same
    batch of the write lane on SQLite; right after it, in its thread, on PostgreSQL) is in the
    STORE's reply, or at the latest in the next command's: the session cannot take the
    folder's announcement for its own alone."""
    mail = hub_only.ctx.mail
    real = mail.store_flags
    others = []

    def and_another(account_id, folder_id, uids, mode, bits, keywords, unchangedsince=None):
        stored = real(account_id, folder_id, uids, mode, bits, keywords, unchangedsince)
        if not others:  # after the session's write, in its thread: in its batch on SQLite
            others.append(real(account_id, folder_id, [(2, 2)], "+", FLAGGED, ()))
        return stored

    with two_sessions(hub_only, 2) as (a, _b):
        mail.store_flags = and_another
        try:
            lines = ok(a, "a1", "UID STORE 1 +FLAGS.SILENT (\\Seen)")
            assert others and others[0].modseq_after > 0
            lines += ok(a, "c1", "STATUS INBOX (MESSAGES)")
            assert any(b"FETCH (UID 2 FLAGS (\\Flagged))" in ln for ln in lines), lines
        finally:
            del mail.store_flags

"""What makes a command cheaper must not change its answer (issue 12 section 4), over raw sockets:
a command repeated with another tag is answered under its own tag (its parsed form is kept by
the text after the tag), and as the session's UTF8=ACCEPT says; FETCH of a few small bodies (a
cheap read) and of a large one (the heavy lane) give the same bytes; with reads on the event
loop (imap.loop_read_budget) a folder too big for the budget is answered all the same, by the
read lane, and a small one on the loop."""
from __future__ import annotations

import re

import pytest

from mailserver.store.mailstore import NewMessage, insert_messages

from .conftest import server_with

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %s\r\n\r\n%s\r\n"


def ok(raw, tag: str, command: str) -> list[bytes]:
    lines = raw.command(tag, command)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


def test_a_repeated_command_is_answered_under_its_own_tag(server, client):
    for subject in (b"one", b"two"):
        assert client.append("INBOX", None, None, RAW % (subject, b"body"))[0] == "OK"
    a, b = server.raw(), server.raw()
    try:
        for raw in (a, b):
            ok(raw, "e", "ENABLE IMAP4rev2")  # no \Recent in the FLAGS below
        ok(a, "s1", "SELECT INBOX")
        ok(b, "s2", "SELECT INBOX")
        for tag, raw in (("x1", a), ("y2", b), ("x3", a)):
            lines = raw.command(tag, "UID FETCH 1:* (FLAGS)")
            assert lines == [b"* 1 FETCH (UID 1 FLAGS ())\r\n", b"* 2 FETCH (UID 2 FLAGS ())\r\n",
                             f"{tag} OK completed\r\n".encode()], lines
        # a bad command stays bad whatever its tag, and its tag is the one answered
        for tag in ("z1", "z2"):
            assert a.command(tag, "UID FETCH 1:* (FLAGZ)")[-1].startswith(f"{tag} BAD".encode())
    finally:
        a.close()
        b.close()


def test_the_same_text_is_read_as_each_session_reads_mailbox_names(server):
    """'&ZeVnLIqe-' is modified UTF-7 for 日本語 in a plain session and a name of its own under
    UTF8=ACCEPT (RFC 6855): the kept parse of one session is not the other's."""
    plain, utf8 = server.raw(), server.raw()
    try:
        ok(utf8, "e", "ENABLE UTF8=ACCEPT")
        ok(plain, "c1", 'CREATE "&ZeVnLIqe-"')  # 日本語
        assert utf8.command("c2", "SELECT &ZeVnLIqe-")[-1].startswith(b"c2 NO")  # no folder of that name
        assert any(b"EXISTS" in x for x in ok(plain, "c3", "SELECT &ZeVnLIqe-"))
        assert any(b"EXISTS" in x for x in ok(utf8, "c4", "SELECT 日本語"))
        assert utf8.command("c5", "SELECT &ZeVnLIqe-")[-1].startswith(b"c5 NO")
    finally:
        plain.close()
        utf8.close()


def test_small_and_large_bodies_are_fetched_byte_for_byte(server, client):
    small = [RAW % (b"small %d" % n, b"x" * (100 * n)) for n in range(1, 4)]
    large = RAW % (b"large", b"y" * 200_000)  # past what a cheap read takes: the heavy lane
    for raw in small + [large]:
        assert client.append("INBOX", None, None, raw)[0] == "OK"
    client.select("INBOX")
    typ, data = client.uid("FETCH", "1:3", "(BODY.PEEK[])")
    assert typ == "OK"
    assert [part[1] for part in data if isinstance(part, tuple)] == small
    typ, data = client.uid("FETCH", "4", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == large
    typ, data = client.uid("FETCH", "1:4", "(FLAGS)")  # PEEK: nothing marked \Seen
    assert typ == "OK" and all(b"\\Seen" not in d for d in data)


@pytest.fixture
def budgeted(tmp_path):
    """A server whose cheap reads run on the event loop within a tiny budget (1,000: a read
    is stopped before 2,000 SQLite steps), INBOX holding 300 messages and Archive 2 of the
    first citizen."""
    with server_with(tmp_path / "loop", "imap.loop_read_budget=1000") as running:
        store, account = running.ctx.store, running.users[0][1]
        with store.session() as s:
            insert_messages(s, [NewMessage(account, RAW % (b"m%d" % n, b"body"), flags=n % 2) for n in range(300)])
            insert_messages(s, [NewMessage(account, RAW % (b"a%d" % n, b"body"), folder="Archive")
                                for n in range(2)])
        yield running


def test_reads_too_big_for_the_loop_are_answered_by_the_read_lane(budgeted):
    raw = budgeted.raw()
    try:
        ok(raw, "e", "ENABLE IMAP4rev2")  # no \Recent in the FLAGS below
        # the small folder: read on the loop
        lines = ok(raw, "a", "SELECT Archive")
        assert b"* 2 EXISTS\r\n" in lines
        reader = budgeted.ctx.loop_reader
        assert reader is not None and reader.ran > 0
        ran, given_up = reader.ran, reader.given_up
        assert ok(raw, "f", "UID FETCH 1:* (FLAGS)") == [b"* 1 FETCH (UID 1 FLAGS ())\r\n",
                                                         b"* 2 FETCH (UID 2 FLAGS ())\r\n"]
        assert reader.ran > ran and reader.given_up == given_up
        # the big one: past the budget, so the read lane answers, completely
        lines = ok(raw, "s", "SELECT INBOX")
        assert b"* 300 EXISTS\r\n" in lines, lines
        assert reader.given_up > given_up
        fetched = ok(raw, "g", "UID FETCH 1:* (FLAGS)")
        assert len(fetched) == 300
        assert fetched[0] == b"* 1 FETCH (UID 1 FLAGS ())\r\n"
        assert fetched[1] == b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n"
        lines = ok(raw, "t", "STATUS INBOX (MESSAGES UNSEEN)")
        assert lines == [b'* STATUS "INBOX" (MESSAGES 300 UNSEEN 150)\r\n'], lines
        # a write's look at the big folder, and the answers after it
        ok(raw, "w", "UID STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert ok(raw, "q", "UID SEARCH FLAGGED") == [b'* ESEARCH (TAG "q") UID ALL 1\r\n']
        # the big folder skips the loop for a while; the small one of the same account does not
        ran = reader.ran
        assert b"* 2 EXISTS\r\n" in ok(raw, "b", "SELECT Archive")
        assert reader.ran > ran
    finally:
        raw.close()


def test_cheap_reads_run_on_the_loop_by_default_and_none_with_a_budget_of_0(server, client, tmp_path):
    assert client.select("INBOX")[0] == "OK"
    reader = server.ctx.loop_reader  # the default budget (50,000 steps): SELECT's pass ran on the loop
    assert reader is not None and reader.ran > 0
    with server_with(tmp_path / "lane", "imap.loop_read_budget=0") as lane:
        off = lane.client()
        try:
            assert off.select("INBOX")[0] == "OK"
            assert re.match(rb"\d+", off.status("INBOX", "(MESSAGES)")[1][0].split(b"MESSAGES ")[1])
            assert lane.ctx.loop_reader is None  # every read on the read lane
        finally:
            off.logout()


def test_a_read_of_one_statement_on_the_loop_sends_that_statement_alone(server, client):
    """STATUS, LIST, FETCH of flags and the look after a command read one statement each on the
    event loop's connection, without BEGIN and ROLLBACK around it (store.driver.read_rows); a
    look that finds messages gone reads the folder's UIDs with it in one transaction, and the
    client is told of the expunge."""
    for subject in (b"one", b"two", b"three"):
        assert client.append("INBOX", None, None, RAW % (subject, b"body"))[0] == "OK"
    raw = server.raw()
    try:
        ok(raw, "s", "SELECT INBOX")  # the loop's reader is made by the loop's thread on a first read
        reader = server.ctx.loop_reader
        sent: list[str] = []
        reader.dbapi.set_trace_callback(sent.append)
        try:
            for tag, command in (("a", "STATUS INBOX (MESSAGES UNSEEN)"), ("b", 'LIST "" "*"'),
                                 ("c", "UID FETCH 1:* (FLAGS)"), ("d", "NOOP")):
                sent.clear()
                ok(raw, tag, command)
                assert len(sent) == 1 and sent[0].startswith("SELECT "), (command, sent)
            # another session expunges: this one's look lists the UIDs, in one transaction
            assert client.select("INBOX")[0] == "OK"
            assert client.store("2", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
            sent.clear()
            lines = ok(raw, "e", "NOOP")
            assert b"* 2 EXPUNGE\r\n" in lines, lines
            assert sent[0].startswith("SELECT ") and sent[1] == "BEGIN" and sent[-1] == "ROLLBACK", sent
            assert any(s.startswith("SELECT uid FROM message") for s in sent), sent
        finally:
            reader.dbapi.set_trace_callback(None)
    finally:
        raw.close()

"""RFC 5267 4 CONTEXT=SEARCH and CONTEXT=SORT over raw sockets: session A keeps ``UID SEARCH
RETURN (UPDATE)`` searches and ``UID SORT RETURN (UPDATE)`` sorts; session B appends, flags and
expunges; A is told ADDTO / REMOVEFROM (with positions in sort order for a SORT) at its next
command and during IDLE, until CANCELUPDATE or the end of the selection."""
from __future__ import annotations

import re
import threading

import pytest

from tests.abuse import PASSWORD, assert_responsive_while, city, city_factory  # noqa: F401  (fixtures)

from .conftest import Raw

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %s\r\n\r\nbody\r\n"


@pytest.fixture
def pair(server, client):
    """A (raw, INBOX selected, one unseen message) and B (imaplib, INBOX selected)."""
    assert client.append("INBOX", None, None, RAW % b"first")[0] == "OK"
    a = server.raw()
    assert a.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    client.select("INBOX")
    yield a, client
    a.close()


def append(b, subject: bytes, flags: str | None = None) -> int:
    typ, data = b.append("INBOX", flags, None, RAW % subject)
    assert typ == "OK"
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0])[1])


def untagged(lines: list[bytes], tag: str) -> list[bytes]:
    return [x for x in lines if x.startswith(f'* ESEARCH (TAG "{tag}")'.encode())]


def test_capability_lists_context_search_and_sort(server, client):
    caps = client.capability()[1][0].split()
    assert b"CONTEXT=SEARCH" in caps
    assert b"CONTEXT=SORT" in caps


def test_sort_updates_carry_positions_in_sort_order(pair):
    a, b = pair  # UID 1 "first", unseen
    m = append(b, b"mike")
    c = append(b, b"charlie", r"(\Seen)")
    assert b"* 3 EXISTS\r\n" in a.command("n", "NOOP")  # A knows all three before it sorts
    lines = a.command("u", "UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL")
    assert lines[-1] == b"u OK completed\r\n"
    assert untagged(lines, "u") == [f'* ESEARCH (TAG "u") UID ALL {c},1:{m}\r\n'.encode()]  # charlie first mike
    # two arrive: "delta" goes second (after charlie), "zulu" last; in ascending positions
    d = append(b, b"delta")
    z = append(b, b"zulu")
    lines = a.command("n", "NOOP")
    assert untagged(lines, "u") == [f'* ESEARCH (TAG "u") UID ADDTO (2 {d} 5 {z})\r\n'.encode()], lines
    # charlie (position 1) and mike (position 4) go: the last position first
    b.uid("STORE", f"{c},{m}", "+FLAGS", r"(\Deleted)")
    b.expunge()
    lines = a.command("n", "NOOP")
    assert untagged(lines, "u") == [f'* ESEARCH (TAG "u") UID REMOVEFROM (4 {m} 1 {c})\r\n'.encode()], lines
    # a flag change that keeps the result as it is tells nothing
    b.uid("STORE", str(d), "+FLAGS", r"(\Flagged)")
    assert untagged(a.command("n", "NOOP"), "u") == []


def test_sort_update_with_a_search_key_and_reverse(pair):
    a, b = pair
    lines = a.command("u", "UID SORT RETURN (UPDATE COUNT) (REVERSE SUBJECT) UTF-8 UNSEEN")
    assert untagged(lines, "u") == [b'* ESEARCH (TAG "u") UID COUNT 1\r\n']
    x = append(b, b"xray")
    append(b, b"alpha", r"(\Seen)")  # does not match
    assert untagged(a.command("n", "NOOP"), "u") == [f'* ESEARCH (TAG "u") UID ADDTO (1 {x})\r\n'.encode()]
    b.uid("STORE", "1", "+FLAGS", r"(\Seen)")  # "first" (position 2) no longer matches
    assert untagged(a.command("n", "NOOP"), "u") == [b'* ESEARCH (TAG "u") UID REMOVEFROM (2 1)\r\n']
    # SORT by sequence number, and a page of a SORT, are not kept up to date
    assert a.command("q", "SORT RETURN (UPDATE) (DATE) UTF-8 ALL")[-1].startswith(b'q NO [NOUPDATE "q"]')
    lines = a.command("p", "UID SORT RETURN (UPDATE PARTIAL 1:1) (DATE) UTF-8 ALL")
    assert lines[-1].startswith(b'p NO [NOUPDATE "p"]')


def test_adds_removes_and_expunges_are_told_at_the_next_command(pair):
    a, b = pair
    lines = a.command("u", "UID SEARCH RETURN (UPDATE) UNSEEN")
    assert lines[-1] == b"u OK completed\r\n"
    assert untagged(lines, "u") == [b'* ESEARCH (TAG "u") UID ALL 1\r\n']
    # a matching message arrives, and one that does not match
    uid = append(b, b"second")
    append(b, b"read", r"(\Seen)")
    lines = a.command("n", "NOOP")
    assert untagged(lines, "u") == [f'* ESEARCH (TAG "u") UID ADDTO (0 {uid})\r\n'.encode()], lines
    # B reads it: no longer unseen
    b.uid("STORE", str(uid), "+FLAGS", r"(\Seen)")
    lines = a.command("n", "NOOP")
    assert untagged(lines, "u") == [f'* ESEARCH (TAG "u") UID REMOVEFROM (0 {uid})\r\n'.encode()], lines
    # B expunges the first (still unseen) message
    b.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    b.expunge()
    lines = a.command("n", "NOOP")
    assert b"* 1 EXPUNGE\r\n" in lines
    assert untagged(lines, "u") == [b'* ESEARCH (TAG "u") UID REMOVEFROM (0 1)\r\n'], lines
    # RFC 5267 4.3: told while the client still knows the message, before the EXPUNGE
    assert lines.index(untagged(lines, "u")[0]) < lines.index(b"* 1 EXPUNGE\r\n"), lines
    # nothing more to tell
    assert untagged(a.command("n", "NOOP"), "u") == []


def test_updates_arrive_during_idle(pair):
    a, b = pair
    assert a.command("u", "UID SEARCH RETURN (UPDATE COUNT) UNSEEN")[0] == b'* ESEARCH (TAG "u") UID COUNT 1\r\n'
    a.send(b"i IDLE\r\n")
    assert a.line().startswith(b"+ ")
    uid = append(b, b"second")
    seen = []
    while not seen or not seen[-1].startswith(b'* ESEARCH'):
        seen.append(a.line())
    assert seen[-1] == f'* ESEARCH (TAG "u") UID ADDTO (0 {uid})\r\n'.encode(), seen
    a.send(b"DONE\r\n")
    assert a.line().startswith(b"i OK")


def test_cancelupdate_and_unselect_end_the_updates(pair):
    a, b = pair
    assert a.command("u", "UID SEARCH RETURN (UPDATE) UNSEEN")[-1] == b"u OK completed\r\n"
    assert a.command("v", "UID SEARCH RETURN (UPDATE) ALL")[-1] == b"v OK completed\r\n"
    assert a.command("c", 'CANCELUPDATE "u"')[-1] == b"c OK completed\r\n"
    uid = append(b, b"second")
    lines = a.command("n", "NOOP")
    assert untagged(lines, "u") == []
    assert untagged(lines, "v") == [f'* ESEARCH (TAG "v") UID ADDTO (0 {uid})\r\n'.encode()]
    # CANCELUPDATE wants quoted tags; a bad one is BAD and the session goes on
    assert a.command("c", "CANCELUPDATE v")[-1].startswith(b"c BAD")
    # a new selection ends the rest
    assert a.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    append(b, b"third")
    assert untagged(a.command("n", "NOOP"), "v") == []


def test_past_the_limit_and_unupdatable_searches_answer_noupdate(pair):
    a, _ = pair
    for n in range(10):  # imap.max_search_updates
        assert a.command(f"t{n}", "UID SEARCH RETURN (UPDATE) ALL")[-1] == f"t{n} OK completed\r\n".encode()
    lines = a.command("x", "UID SEARCH RETURN (UPDATE) ALL")
    assert untagged(lines, "x") == [b'* ESEARCH (TAG "x") UID ALL 1\r\n']  # answered all the same
    assert lines[-1].startswith(b'x NO [NOUPDATE "x"]'), lines
    # the same tag again replaces its search rather than adding one
    assert a.command("t0", "UID SEARCH RETURN (UPDATE) UNSEEN")[-1] == b"t0 OK completed\r\n"
    assert a.command("c", 'CANCELUPDATE "t1" "t2"')[-1] == b"c OK completed\r\n"
    # sequence numbers shift with expunges: not kept up to date
    assert a.command("q", "SEARCH RETURN (UPDATE) ALL")[-1].startswith(b'q NO [NOUPDATE "q"]')
    assert a.command("r", "UID SEARCH RETURN (UPDATE) 1:*")[-1].startswith(b'r NO [NOUPDATE "r"]')
    assert a.command("y", "UID SEARCH RETURN (UPDATE) ALL")[-1] == b"y OK completed\r\n"  # room again


def test_updated_searches_under_a_flood_of_changes_leave_others_responsive(city):  # noqa: F811
    """The abuser keeps imap.max_search_updates TEXT searches on 60 messages while another of
    its connections flips \\Seen on all of them again and again: each flip re-checks 60
    messages 10 times, on the heavy lane, so other citizens are still served."""
    setup = city.imap()
    for n in range(60):
        assert setup.append("INBOX", None, None, RAW % f"notice {n}".encode())[0] == "OK"
    setup.select("INBOX")
    watcher = Raw(city.imap_port)
    assert watcher.command("l", f'LOGIN "{city.addresses[0]}" "{PASSWORD}"')[-1].startswith(b"l OK")
    assert watcher.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    for n in range(10):
        lines = watcher.command(f"t{n}", "UID SEARCH RETURN (UPDATE COUNT) UNSEEN TEXT notice")
        assert lines[-1] == f"t{n} OK completed\r\n".encode()
    told: list[bytes] = []

    def flip(stop: threading.Event) -> None:
        while not stop.is_set():
            setup.store("1:*", "+FLAGS", r"(\Seen)")
            setup.store("1:*", "-FLAGS", r"(\Seen)")

    def watch(stop: threading.Event) -> None:
        while not stop.is_set():
            told.extend(x for x in watcher.command("n", "NOOP") if b"REMOVEFROM" in x or b"ADDTO" in x)

    assert_responsive_while(city, flip, watch, join=30)
    assert told  # the searches were being updated all along
    lines = watcher.command("n", "NOOP")  # the session goes on
    assert lines[-1] == b"n OK completed\r\n"
    watcher.close()
    setup.logout()


def test_expunges_leave_a_sort_before_the_expunge_and_additions_follow_exists(pair):
    """RFC 5267 4.3: a SORT context's REMOVEFROM for expunged messages comes before the EXPUNGE
    responses (under QRESYNC, before VANISHED), and an ADDTO after the EXISTS that announces the
    message it adds, when both happen between two commands."""
    a, b = pair  # UID 1 "first"
    m = append(b, b"mike")
    assert b"* 2 EXISTS\r\n" in a.command("n", "NOOP")
    assert a.command("e", "ENABLE QRESYNC")[-1].startswith(b"e OK")
    lines = a.command("u", "UID SORT RETURN (UPDATE CONTEXT COUNT) (SUBJECT) UTF-8 ALL")
    assert untagged(lines, "u") == [b'* ESEARCH (TAG "u") UID COUNT 2\r\n'], lines  # CONTEXT: a hint
    b.uid("STORE", str(m), "+FLAGS", r"(\Deleted)")
    b.expunge()
    k = append(b, b"kilo")
    lines = a.command("n", "NOOP")
    told = untagged(lines, "u")
    assert told == [f'* ESEARCH (TAG "u") UID REMOVEFROM (2 {m})\r\n'.encode(),
                    f'* ESEARCH (TAG "u") UID ADDTO (2 {k})\r\n'.encode()], lines
    vanished = [x for x in lines if x.startswith(b"* VANISHED")]
    assert vanished == [f"* VANISHED {m}\r\n".encode()], lines
    assert lines.index(told[0]) < lines.index(vanished[0]) < lines.index(b"* 2 EXISTS\r\n") < lines.index(told[1])


def test_sort_return_save_keeps_the_sorted_result_for_dollar(pair):
    """RFC 5182 with RFC 5267 ESORT: SORT RETURN (SAVE) keeps its result as "$" (a set; later
    commands see it in mailbox order); SAVE alone answers only OK; with MIN or MAX alone, the
    first or last in sort order is what is kept."""
    a, b = pair  # UID 1 "first"
    z = append(b, b"zulu")
    c = append(b, b"charlie", r"(\Seen)")
    assert b"* 3 EXISTS\r\n" in a.command("n", "NOOP")
    assert a.command("s", "UID SORT RETURN (SAVE) (SUBJECT) UTF-8 OR SUBJECT zulu SUBJECT charlie") == [
        b"s OK completed\r\n"]
    assert a.command("f", "UID FETCH $ (UID)")[:-1] == [f"* 2 FETCH (UID {z})\r\n".encode(),
                                                          f"* 3 FETCH (UID {c})\r\n".encode()]
    # "$" in a later SORT's search keys; SAVE with MIN: the first in sort order (charlie)
    lines = a.command("m", "UID SORT RETURN (SAVE MIN) (REVERSE SUBJECT) UTF-8 $")
    assert untagged(lines, "m") == [f'* ESEARCH (TAG "m") UID MIN {z}\r\n'.encode()], lines
    assert a.command("g", "UID FETCH $ (UID)")[:-1] == [f"* 2 FETCH (UID {z})\r\n".encode()]
    lines = a.command("x", "SORT RETURN (MAX SAVE) (SUBJECT) UTF-8 ALL")  # last in order: zulu
    assert untagged(lines, "x") == [b'* ESEARCH (TAG "x") MAX 2\r\n'], lines
    assert a.command("h", "FETCH $ (UID)")[:-1] == [f"* 2 FETCH (UID {z})\r\n".encode()]
    # with COUNT or ALL, the whole result is kept; STORE through "$" changes those messages
    lines = a.command("y", "SORT RETURN (SAVE COUNT) (SUBJECT) UTF-8 UNSEEN")
    assert untagged(lines, "y") == [b'* ESEARCH (TAG "y") COUNT 2\r\n'], lines
    assert a.command("t", "STORE $ +FLAGS.SILENT (\\Flagged)")[-1].startswith(b"t OK")
    lines = a.command("q", "UID SEARCH RETURN (ALL) FLAGGED")
    assert untagged(lines, "q") == [f'* ESEARCH (TAG "q") UID ALL 1:{z}\r\n'.encode()], lines
    # an empty result empties "$"
    assert a.command("e", "SORT RETURN (SAVE) (SUBJECT) UTF-8 SUBJECT nothing-like-this")[-1].startswith(b"e OK")
    assert a.command("k", "FETCH $ (UID)") == [b"k OK completed\r\n"]

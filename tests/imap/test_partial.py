"""Paged SEARCH and SORT results: the PARTIAL return option of RFC 5267 4.4 with RFC 9394's
ranges counted from the end, in ESEARCH and ESORT answers, over a raw socket."""
from __future__ import annotations

import re

import pytest

SUBJECTS = ("delta", "alpha", "echo", "bravo", "foxtrot", "charlie")  # sequence numbers 1..6


@pytest.fixture
def paged(server, client):
    for subject in SUBJECTS:
        raw = f"From: a@x.example\r\nTo: b@y.example\r\nSubject: {subject}\r\n\r\nbody\r\n"
        assert client.append("INBOX", None, None, raw.encode())[0] == "OK"
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    uids = [int(u) for u in raw.command("u", "UID SEARCH ALL")[0].split()[2:]]
    assert len(uids) == 6
    yield raw, uids
    raw.close()


def answer(raw, tag: str, command: str) -> bytes:
    lines = raw.command(tag, command)
    assert lines[-1] == f"{tag} OK completed\r\n".encode(), lines
    assert len(lines) == 2, lines
    return lines[0]


def test_partial_ranges_of_a_search(paged):
    raw, uids = paged
    u = [str(x) for x in uids]
    # the first page, a middle page (written high:low), a page running past the end, one beyond it
    assert answer(raw, "a", "UID SEARCH RETURN (PARTIAL 1:2) ALL") == (
        f'* ESEARCH (TAG "a") UID PARTIAL (1:2 {u[0]}:{u[1]})\r\n'.encode())
    assert answer(raw, "b", "SEARCH RETURN (PARTIAL 4:3) ALL") == b'* ESEARCH (TAG "b") PARTIAL (4:3 3:4)\r\n'
    assert answer(raw, "c", "SEARCH RETURN (PARTIAL 5:100) ALL") == b'* ESEARCH (TAG "c") PARTIAL (5:100 5:6)\r\n'
    assert answer(raw, "d", "SEARCH RETURN (PARTIAL 7:9) ALL") == b'* ESEARCH (TAG "d") PARTIAL (7:9 NIL)\r\n'
    # RFC 9394: from the end, -1 the last message; past the start selects what is there
    assert answer(raw, "e", "SEARCH RETURN (PARTIAL -1:-2) ALL") == b'* ESEARCH (TAG "e") PARTIAL (-1:-2 5:6)\r\n'
    assert answer(raw, "f", "SEARCH RETURN (PARTIAL -5:-20) ALL") == b'* ESEARCH (TAG "f") PARTIAL (-5:-20 1:2)\r\n'
    assert answer(raw, "g", "SEARCH RETURN (PARTIAL -7:-9) ALL") == b'* ESEARCH (TAG "g") PARTIAL (-7:-9 NIL)\r\n'
    # the range counts the results, not the folder; COUNT, MIN and MAX are of every result
    assert raw.command("h", "STORE 2,3,5 +FLAGS.SILENT (\\Flagged)") == [b"h OK completed\r\n"]
    assert answer(raw, "i", "SEARCH RETURN (COUNT PARTIAL 2:2 MIN MAX) FLAGGED") == (
        b'* ESEARCH (TAG "i") MIN 2 MAX 5 COUNT 3 PARTIAL (2:2 3)\r\n')
    assert answer(raw, "j", "SEARCH RETURN (PARTIAL 1:10) DELETED") == b'* ESEARCH (TAG "j") PARTIAL (1:10 NIL)\r\n'


def test_partial_with_a_modseq_key_carries_the_highest_modseq_returned(paged):
    raw, _ = paged
    lines = raw.command("m", "SEARCH RETURN (PARTIAL -1:-1) MODSEQ 1")
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ "), lines
    last = int(re.fullmatch(rb'\* ESEARCH \(TAG "m"\) PARTIAL \(-1:-1 6\) MODSEQ (\d+)\r\n', lines[1])[1])
    first = int(raw.command("n", "SEARCH RETURN (PARTIAL 1:1) MODSEQ 1")[0].split()[-1])
    assert first < last  # each page carries its own message's MODSEQ
    assert raw.command("o", "FETCH 6 (MODSEQ)")[0] == f"* 6 FETCH (MODSEQ ({last}))\r\n".encode()


def test_partial_pages_a_sort_in_sort_order(paged):
    raw, uids = paged
    # by subject: alpha(2) bravo(4) charlie(6) delta(1) echo(3) foxtrot(5)
    assert answer(raw, "a", "SORT RETURN (PARTIAL 1:3) (SUBJECT) UTF-8 ALL") == (
        b'* ESEARCH (TAG "a") PARTIAL (1:3 2,4,6)\r\n')
    assert answer(raw, "b", "SORT RETURN (PARTIAL -1:-3 COUNT) (SUBJECT) UTF-8 ALL") == (
        b'* ESEARCH (TAG "b") COUNT 6 PARTIAL (-1:-3 1,3,5)\r\n')
    assert answer(raw, "c", "UID SORT RETURN (PARTIAL 2:3) (REVERSE SUBJECT) UTF-8 ALL") == (
        f'* ESEARCH (TAG "c") UID PARTIAL (2:3 {uids[2]},{uids[0]})\r\n'.encode())
    assert answer(raw, "d", "SORT RETURN (PARTIAL 9:10) (SUBJECT) UTF-8 ALL") == (
        b'* ESEARCH (TAG "d") PARTIAL (9:10 NIL)\r\n')


@pytest.mark.parametrize("options", ["PARTIAL 0:5", "PARTIAL 1:-1", "PARTIAL -0:-3", "PARTIAL", "PARTIAL ALL",
                                     "PARTIAL 1:5 ALL", "PARTIAL 1:2 PARTIAL 3:4", "PARTIAL 1:99999999999"])
def test_bad_partial_ranges_are_bad_and_the_session_goes_on(paged, options):
    raw, _ = paged
    assert raw.command("x", f"SEARCH RETURN ({options}) ALL")[-1].startswith(b"x BAD")
    assert raw.command("y", f"SORT RETURN ({options}) (DATE) UTF-8 ALL")[-1].startswith(b"y BAD")
    assert answer(raw, "z", "SEARCH RETURN (COUNT) ALL") == b'* ESEARCH (TAG "z") COUNT 6\r\n'


def test_partial_is_advertised(server, client):
    assert "PARTIAL" in client.capability()[1][0].decode().split()


def fetched_uids(raw, tag: str, command: str) -> list[int]:
    lines = raw.command(tag, command)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return [int(re.search(rb"UID (\d+)", x)[1]) for x in lines[:-1] if b" FETCH " in x]


def test_fetch_partial_windows_of_the_addressed_messages(paged):
    """RFC 9394 3.2: (PARTIAL range) picks positions among the messages the set addresses, in
    mailbox order, from the first (n:m) or from the last (-n:-m)."""
    raw, uids = paged
    assert fetched_uids(raw, "a", "UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)") == uids[4:]
    assert fetched_uids(raw, "b", f"UID FETCH {uids[1]}:* (FLAGS) (PARTIAL 1:2)") == uids[1:3]
    sparse = ",".join(str(u) for u in (uids[0], uids[2], uids[4]))
    assert fetched_uids(raw, "c", f"UID FETCH {sparse} (FLAGS) (PARTIAL 3:2)") == [uids[2], uids[4]]
    assert fetched_uids(raw, "d", "UID FETCH 1:* (FLAGS) (PARTIAL 7:9)") == []
    assert fetched_uids(raw, "e", "FETCH 2:5 (UID) (PARTIAL -2:-1)") == uids[3:5]
    # with CHANGEDSINCE: the window first, then the filter (RFC 9394 3.4)
    raw.command("t", f"UID STORE {uids[0]} +FLAGS.SILENT (\\Flagged)")
    lines = b"".join(raw.command("m", f"UID FETCH {uids[0]} (MODSEQ)"))
    modseq = int(re.search(rb"FETCH \(UID \d+ MODSEQ \((\d+)\)", lines)[1])
    assert fetched_uids(raw, "f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq - 1} PARTIAL 1:3)") == [uids[0]]
    assert fetched_uids(raw, "g", f"UID FETCH 1:* (FLAGS) (PARTIAL -1:-3 CHANGEDSINCE {modseq - 1})") == []
    for bad in ("PARTIAL 0:2", "PARTIAL 1:-2", "PARTIAL", "PARTIAL 1:2 PARTIAL 3:4", "VANISHED PARTIAL 1:2"):
        assert raw.command("x", f"UID FETCH 1:* (FLAGS) ({bad})")[-1].startswith(b"x BAD"), bad
    assert fetched_uids(raw, "z", "UID FETCH 1:* (UID)") == uids

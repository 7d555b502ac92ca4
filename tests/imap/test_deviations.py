"""The deviations of issue 12 section 1, each over a real socket: atoms with "[", EXAMINE and
\\Recent, keywords announced before use, CONDSTORE enabling while a mailbox is selected.
(Subscriptions and LIST-EXTENDED: test_subscriptions.py.)"""
from __future__ import annotations

import re

from mailserver.store import mailboxes as mb
from mailserver.store.mailstore import deliver


def _deliver(server, count: int, user: int = 0) -> None:
    for n in range(count):
        deliver(server.ctx.store, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), [server.users[user][1]])


# -- atoms (RFC 3501 9, ATOM-CHAR) -------------------------------------------------------------------

def test_open_bracket_is_an_atom_character_outside_a_fetch_section(server):
    raw = server.raw()
    try:
        assert raw.command("a", "SELECT a[b")[-1].startswith(b"a NO [NONEXISTENT]")
        assert raw.command("b", "CREATE a[b]c")[-1].startswith(b"b OK")
        lines = raw.command("c", "LIST \"\" a[*")
        assert lines == [b'* LIST (\\HasNoChildren) "/" "a[b]c"\r\n', b"c OK completed\r\n"]
        lines = raw.command("d", "LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*")
        assert lines == [b"d OK completed\r\n"]
        assert raw.command("e", "STATUS a[b]c (MESSAGES)")[0] == b'* STATUS "a[b]c" (MESSAGES 0)\r\n'
        assert raw.command("f", "SELECT &'")[-1].startswith(b"f NO [CANNOT]")  # a valid atom, not modified UTF-7
        # in FETCH, "[" still opens a section, with its spaces and parentheses
        _deliver(server, 1)
        assert raw.command("g", "SELECT INBOX")[-1].startswith(b"g OK")
        lines = raw.command("h", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS)")
        assert lines[0].startswith(b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {"), lines
        assert lines[-1].startswith(b"h OK")
        assert raw.command("i", "FETCH 1 (BODY[HEADER.FIELDS (Subject)")[-1].startswith(b"i BAD")
    finally:
        raw.close()


# -- EXAMINE and \Recent (RFC 3501 6.3.2) -------------------------------------------------------------

def _recent(lines: list[bytes]) -> int:
    return int(next(re.match(rb"\* (\d+) RECENT", x).group(1) for x in lines if re.match(rb"\* \d+ RECENT", x)))


def test_examine_counts_recent_messages_without_claiming_them(server):
    _deliver(server, 2)
    raw = server.raw()
    try:
        assert raw.command("s", "STATUS INBOX (RECENT)")[0] == b'* STATUS "INBOX" (RECENT 2)\r\n'
        examined = raw.command("e", "EXAMINE INBOX")
        assert examined[-1].startswith(b"e OK [READ-ONLY]") and _recent(examined) == 2
        flags = raw.command("f", "FETCH 1:* (FLAGS)")
        assert flags[:2] == [b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n", b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"]
        _deliver(server, 1)  # one more arrives while examined: recent too, and not claimed
        polled = raw.command("n", "NOOP")
        assert b"* 3 EXISTS\r\n" in polled and b"* 3 RECENT\r\n" in polled, polled
        # EXAMINE left them all to the first SELECT
        assert raw.command("s2", "STATUS INBOX (RECENT)")[0] == b'* STATUS "INBOX" (RECENT 3)\r\n'
        selected = raw.command("t", "SELECT INBOX")
        assert selected[-1].startswith(b"t OK [READ-WRITE]") and _recent(selected) == 3
        again = raw.command("u", "EXAMINE INBOX")
        assert _recent(again) == 0  # now claimed by that SELECT
    finally:
        raw.close()

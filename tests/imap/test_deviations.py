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


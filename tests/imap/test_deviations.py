"""The deviations of issue 12 section 1, each over a real socket: atoms with "[", EXAMINE and
\\Recent, keywords announced before use, CONDSTORE enabling while a mailbox is selected.
(Subscriptions and LIST-EXTENDED: test_subscriptions.py.)"""
from __future__ import annotations

import random
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


# -- new keywords are announced before use (RFC 3501 7.2.6, 7.4.2) ---------------------------------------

class Watched:
    """A raw session that checks, line by line, that every keyword a FETCH carries was listed in
    an untagged FLAGS and PERMANENTFLAGS before it."""

    def __init__(self, server) -> None:
        self.raw = server.raw()
        self.flags: set[str] = set()
        self.permanent: set[str] = set()

    def command(self, tag: str, text: str) -> list[bytes]:
        lines = self.raw.command(tag, text)
        for line in lines:
            text_line = line.decode()
            if m := re.match(r"\* FLAGS \((.*)\)", text_line):
                self.flags = set(m.group(1).split())
            elif m := re.match(r"\* OK \[PERMANENTFLAGS \((.*)\)\]", text_line):
                self.permanent = set(m.group(1).split())
            elif m := re.match(r"\* \d+ FETCH .*FLAGS \(([^)]*)\)", text_line):
                used = {f for f in m.group(1).split() if not f.startswith("\\")}
                assert used <= self.flags and used <= self.permanent, (text_line, self.flags, self.permanent)
        return lines

    def close(self) -> None:
        self.raw.close()


def test_a_new_keyword_is_announced_in_flags_before_a_fetch_carries_it(server):
    _deliver(server, 3)
    a, b = Watched(server), Watched(server)
    try:
        assert a.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        assert b.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        assert "$Label1" not in a.flags
        assert b.command("t", "STORE 2 +FLAGS ($Label1)")[-1].startswith(b"t OK")  # B's own FETCH: announced first
        assert "$Label1" in b.flags
        lines = a.command("f", "FETCH 1:* (FLAGS)")  # A reads it from the store before it is told of the change
        assert any(b"$Label1" in x for x in lines) and "$Label1" in a.flags
        assert b.command("u", "STORE 3 +FLAGS ($Label2)")[-1].startswith(b"u OK")
        lines = a.command("n", "NOOP")  # the unsolicited FETCH of the change: FLAGS first
        assert any(b"$Label2" in x for x in lines) and "$Label2" in a.flags
        a.raw.send(b"i IDLE\r\n")
        assert a.raw.line().startswith(b"+")
        assert b.command("v", "UID STORE 1 +FLAGS ($Label3)")[-1].startswith(b"v OK")
        seen = [a.raw.line(), a.raw.line(), a.raw.line()]  # FLAGS, PERMANENTFLAGS, then the FETCH
        assert seen[0].startswith(b"* FLAGS (") and b"$Label3" in seen[0]
        assert seen[1].startswith(b"* OK [PERMANENTFLAGS (") and b"$Label3" in seen[1]
        assert seen[2].startswith(b"* 1 FETCH (") and b"$Label3" in seen[2]
        a.raw.send(b"DONE\r\n")
        assert a.raw.line().startswith(b"i OK")
        # a random load of both sessions storing keywords: the invariant holds in every line
        rng = random.Random(12)
        for n in range(40):
            session = rng.choice((a, b))
            word = f"$K{rng.randrange(12)}"
            verb = rng.choice(("STORE 1:3 +FLAGS", "STORE 2 FLAGS", "FETCH 1:* (FLAGS)", "NOOP", "STORE 1 -FLAGS"))
            command = verb if verb.startswith(("FETCH", "NOOP")) else f"{verb} ({word})"
            assert session.command(f"r{n}", command)[-1].startswith(f"r{n} OK".encode())
    finally:
        a.close()
        b.close()


# -- CONDSTORE enabling (RFC 7162 3.1) -------------------------------------------------------------

def test_the_first_condstore_enabling_command_while_selected_reports_highestmodseq(server):
    _deliver(server, 2)
    for i, enabling in enumerate(("FETCH 1 (MODSEQ)", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
                                  "STORE 1 (UNCHANGEDSINCE 100) +FLAGS ($x)", "SEARCH MODSEQ 1",
                                  "STATUS INBOX (HIGHESTMODSEQ)", "ENABLE CONDSTORE")):
        raw = server.raw()
        try:
            selected = raw.command("s", "SELECT INBOX")
            highest = next(x for x in selected if x.startswith(b"* OK [HIGHESTMODSEQ "))
            lines = raw.command(f"e{i}", enabling)
            assert lines[-1].startswith(f"e{i} OK".encode()), lines
            told = [x for x in lines if x.startswith(b"* OK [HIGHESTMODSEQ ")]
            assert len(told) == 1, (enabling, lines)
            assert told[0].split(b"]")[0] == highest.split(b"]")[0], (told, highest)
            again = raw.command("f", "FETCH 1 (MODSEQ)")  # only the first one
            assert not any(x.startswith(b"* OK [HIGHESTMODSEQ ") for x in again), again
        finally:
            raw.close()
    raw = server.raw()
    try:  # not selected: nothing to report; the next SELECT reports it as always
        assert raw.command("a", "ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE\r\n", b"a OK completed\r\n"]
    finally:
        raw.close()

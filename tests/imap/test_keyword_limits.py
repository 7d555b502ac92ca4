"""Keywords are bounded per folder and per message (imap.max_keywords, imap.max_keyword_length).

Without a bound one citizen stored 7,500 keywords on a message (a 54 KB FLAGS answer), and every
SELECT, and every new keyword, sends the folder's whole list to each client that has it open.
RFC 3501 7.1: PERMANENTFLAGS without "\\*" tells clients no new keyword can be made; a STORE or
APPEND that would make one anyway is refused with NO [LIMIT] and changes nothing."""
from __future__ import annotations

from .conftest import server_with

MESSAGE = "Subject: tags\r\n\r\nhello\r\n"


def append(raw, tag: str, mailbox: str, flags: str) -> bytes:
    """APPEND with a non-synchronising literal (RFC 7888): the tagged reply."""
    return raw.command(tag, f"APPEND {mailbox} ({flags}) {{{len(MESSAGE)}+}}\r\n{MESSAGE}")[-1]


def permanent(lines: list[bytes]) -> bytes:
    return next(line for line in lines if b"PERMANENTFLAGS" in line)


def test_keywords_past_the_bounds_are_refused_and_nothing_changes(tmp_path, caplog):
    caplog.set_level("INFO", "civicmail.imap")
    with server_with(tmp_path / "d", "imap.max_keywords=4", "imap.max_keyword_length=10") as running:
        raw = running.raw()
        assert append(raw, "a1", "INBOX", "$k1 $k2").startswith(b"a1 OK")
        # one message may not carry more than the bound, wherever it goes
        assert append(raw, "a2", "Archive", "$k1 $k2 $k3 $k4 $k5").startswith(b"a2 NO [LIMIT]")
        assert append(raw, "a3", "Archive", "$" + "x" * 10).startswith(b"a3 NO [LIMIT]")
        selected = raw.command("s", "SELECT INBOX")
        assert selected[-1].startswith(b"s OK")
        assert b"$k1 $k2 \\*)" in permanent(selected)
        uid_lines = raw.command("f0", "FETCH 1:* (UID)")
        last = len(uid_lines) - 1  # the message appended above is the last
        stored = raw.command("t1", f"STORE {last} +FLAGS ($k3 $k4)")
        assert stored[-1].startswith(b"t1 OK")
        # the folder is full: the new list is announced without "\*"
        assert any(line.startswith(b"* FLAGS (") and b"$k4" in line for line in stored)
        assert permanent(stored).endswith(b"$k3 $k4)] flags permitted\r\n")
        # a fifth keyword, on this message or another, is refused, and nothing is stored
        assert raw.command("t2", f"STORE {last} +FLAGS ($k5)")[-1].startswith(b"t2 NO [LIMIT]")
        assert raw.command("t3", "STORE 1 FLAGS (\\Seen $k5)")[-1].startswith(b"t3 NO [LIMIT]")
        assert append(raw, "a4", "INBOX", "$k5").startswith(b"a4 NO [LIMIT]")
        assert raw.command("t4", f"STORE {last} +FLAGS ($k-long-name)")[-1].startswith(b"t4 NO [LIMIT]")
        fetched = raw.command("f1", f"FETCH {last} (FLAGS)")
        assert fetched[-1].startswith(b"f1 OK") and fetched[0].endswith(b" $k1 $k2 $k3 $k4))\r\n")
        assert b"$k5" not in b"".join(raw.command("f2", "FETCH 1:* (FLAGS)"))
        # keywords the folder already holds may still be set and removed
        assert raw.command("t5", "STORE 1 +FLAGS ($k1 \\Flagged)")[-1].startswith(b"t5 OK")
        assert raw.command("t6", f"STORE {last} -FLAGS ($k2)")[-1].startswith(b"t6 OK")
        assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
        # the folder's keywords are those its messages carry: $k2 is gone, so another session
        # may make one more, and then no more
        other = running.raw()
        assert permanent(other.command("s", "SELECT INBOX")).endswith(b"$k1 $k3 $k4 \\*)] flags permitted\r\n")
        assert other.command("t1", "STORE 1 +FLAGS ($k6)")[-1].startswith(b"t1 OK")
        assert other.command("t2", "STORE 1 +FLAGS ($k7)")[-1].startswith(b"t2 NO [LIMIT]")
        assert b"\\*" not in permanent(other.command("s2", "SELECT INBOX"))
        other.close()
        raw.close()
    refusals = [r.getMessage() for r in caplog.records if "imap limit=keywords" in r.getMessage()]
    assert len(refusals) == 7 and all("client=127.0.0.1" in line for line in refusals)

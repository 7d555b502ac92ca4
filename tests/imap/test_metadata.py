"""RFC 5464 METADATA over a raw socket (imaplib has no METADATA helpers): entries on the server
and on a folder are set, read and removed (NIL); /private and /shared are each the account's
own; GETMETADATA's DEPTH and MAXSIZE ([METADATA LONGENTRIES n]); values past
imap.metadata_max_size or past imap.metadata_max_entries are refused ([METADATA MAXSIZE n],
[METADATA TOOMANY]) with nothing stored; values as literals, binary (literal8) and Chinese; a
folder's entries go with DELETE and move with RENAME."""
from __future__ import annotations

import re

import pytest

from tests.imap.conftest import Raw, server_with

MAX_SIZE, MAX_ENTRIES = 100, 6


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("metadata"), f"imap.metadata_max_size={MAX_SIZE}",
                     f"imap.metadata_max_entries={MAX_ENTRIES}") as running:
        yield running


class Client(Raw):
    """Raw, reading responses whole: a line ending in a literal ({n} or ~{n}) goes on after it."""

    def response(self) -> bytes:
        out = b""
        while True:
            line = self.line()
            out += line
            m = re.search(rb"~?\{(\d+)\}\r\n\Z", line)
            if not m:
                return out
            out += self.file.read(int(m.group(1)))

    def run(self, tag: str, data: bytes) -> list[bytes]:
        self.send(tag.encode() + b" " + data + b"\r\n")
        lines = []
        while True:
            lines.append(self.response())
            if lines[-1].startswith(tag.encode() + b" ") or not lines[-1]:
                return lines


def _client(running, user: int = 0) -> Client:
    c = Client(running.port)
    assert c.run("l", f'LOGIN "{running.users[user][0]}" "correct horse battery"'.encode())[-1].startswith(b"l OK")
    return c


@pytest.fixture
def c(running):
    client = _client(running)
    yield client
    client.run("z", b'SETMETADATA "" (/private/a NIL /private/a/b NIL /private/a/b/c NIL /shared/comment NIL '
                    b'/private/comment NIL /private/big NIL /private/bin NIL)')
    client.close()


def test_server_entries_set_read_and_removed_with_nil(c):
    assert b" METADATA" in c.run("c", b"CAPABILITY")[0]
    assert c.run("s", b'SETMETADATA "" (/shared/comment "city notices" /private/comment {5+}\r\nmine!)')[-1] \
        .startswith(b"s OK")
    got = c.run("g", b'GETMETADATA "" (/shared/comment /private/comment /private/none)')
    assert got[0] == b'* METADATA "" (/shared/comment "city notices" /private/comment "mine!" /private/none NIL)\r\n'
    assert got[-1].startswith(b"g OK")
    # entry names are case-insensitive
    assert c.run("g2", b'GETMETADATA "" /SHARED/Comment')[0] == b'* METADATA "" (/shared/comment "city notices")\r\n'
    assert c.run("d", b'SETMETADATA "" (/shared/comment NIL)')[-1].startswith(b"d OK")
    assert c.run("g3", b'GETMETADATA "" /shared/comment')[0] == b'* METADATA "" (/shared/comment NIL)\r\n'


def test_mailbox_entries_and_private_and_shared_per_account(running, c):
    assert c.run("s", b'SETMETADATA INBOX (/private/comment "p" /shared/comment "s")')[-1].startswith(b"s OK")
    assert c.run("g", b'GETMETADATA INBOX (/private/comment /shared/comment)')[0] == \
        b'* METADATA "INBOX" (/private/comment "p" /shared/comment "s")\r\n'
    # the server's entries and the folder's are apart
    assert c.run("g2", b'GETMETADATA "" /private/comment')[0] == b'* METADATA "" (/private/comment NIL)\r\n'
    other = _client(running, 1)
    try:  # no shared mailboxes here: another account sees neither the private nor the shared entry
        assert other.run("g", b'GETMETADATA INBOX (/private/comment /shared/comment)')[0] == \
            b'* METADATA "INBOX" (/private/comment NIL /shared/comment NIL)\r\n'
    finally:
        other.close()
    assert c.run("n", b'GETMETADATA nosuch /private/comment')[-1].startswith(b"n NO [NONEXISTENT]")
    c.run("z", b'SETMETADATA INBOX (/private/comment NIL /shared/comment NIL)')


def test_depth_and_maxsize(c):
    assert c.run("s", b'SETMETADATA "" (/private/a "1" /private/a/b "22" /private/a/b/c "333")')[-1] \
        .startswith(b"s OK")
    assert c.run("d0", b'GETMETADATA "" /private/a')[0] == b'* METADATA "" (/private/a "1")\r\n'
    assert c.run("d1", b'GETMETADATA (DEPTH 1) "" /private/a')[0] == \
        b'* METADATA "" (/private/a "1" /private/a/b "22")\r\n'
    assert c.run("di", b'GETMETADATA (DEPTH infinity) "" /private')[0] == \
        b'* METADATA "" (/private/a "1" /private/a/b "22" /private/a/b/c "333")\r\n'
    got = c.run("m", b'GETMETADATA (MAXSIZE 2 DEPTH infinity) "" /private/a')
    assert got[0] == b'* METADATA "" (/private/a "1" /private/a/b "22")\r\n'
    assert got[-1].startswith(b"m OK [METADATA LONGENTRIES 3]"), got
    assert c.run("m2", b'GETMETADATA (MAXSIZE 3) "" /private/a/b/c')[-1] == b"m2 OK completed\r\n"
    assert c.run("b", b'GETMETADATA (DEPTH 2) "" /private/a')[-1].startswith(b"b BAD")


def test_too_large_and_too_many_store_nothing(c):
    big = b"x" * (MAX_SIZE + 1)
    refused = c.run("s", b'SETMETADATA "" (/private/comment "ok" /private/big {%d+}\r\n%s)' % (len(big), big))
    assert refused[-1].startswith(b"s NO [METADATA MAXSIZE %d]" % MAX_SIZE), refused
    assert c.run("g", b'GETMETADATA "" /private/comment')[0] == b'* METADATA "" (/private/comment NIL)\r\n'
    many = b" ".join(b'/private/a/%d "v"' % n for n in range(MAX_ENTRIES + 1))
    assert c.run("t", b'SETMETADATA "" (%s)' % many)[-1].startswith(b"t NO [METADATA TOOMANY]")
    assert c.run("g2", b'GETMETADATA (DEPTH 1) "" /private/a')[0] == b'* METADATA "" (/private/a NIL)\r\n'
    # the session goes on, and the limit is per account: exactly MAX_ENTRIES fit
    fits = b" ".join(b'/private/a/%d "v"' % n for n in range(MAX_ENTRIES))
    assert c.run("f", b'SETMETADATA "" (%s)' % fits)[-1].startswith(b"f OK")
    assert c.run("t2", b'SETMETADATA INBOX (/shared/comment "one more")')[-1].startswith(b"t2 NO [METADATA TOOMANY]")
    # replacing an entry adds none
    assert c.run("r", b'SETMETADATA "" (/private/a/0 "w")')[-1].startswith(b"r OK")
    c.run("z", b'SETMETADATA "" (%s)' % b" ".join(b"/private/a/%d NIL" % n for n in range(MAX_ENTRIES)))


def test_binary_and_chinese_values_as_literals(c):
    binary = bytes(range(256))[:MAX_SIZE]
    chinese = "市民信箱的备注".encode()
    assert c.run("s", b'SETMETADATA "" (/private/bin ~{%d+}\r\n%s /private/comment {%d+}\r\n%s)'
                 % (len(binary), binary, len(chinese), chinese))[-1].startswith(b"s OK")
    got = c.run("g", b'GETMETADATA "" (/private/bin /private/comment)')
    assert got[0] == b'* METADATA "" (/private/bin ~{%d}\r\n%s /private/comment {%d}\r\n%s)\r\n' \
        % (len(binary), binary, len(chinese), chinese), got


def test_bad_entry_names_are_bad_and_the_session_goes_on(c):
    for n, bad in enumerate((b"/comment", b"/private", b"/private/a*", b"/private/a/", b"/private//a")):
        assert c.run(f"b{n}", b'SETMETADATA "" (%s "v")' % bad)[-1].startswith(f"b{n} BAD".encode()), bad
    assert c.run("v", b'SETMETADATA "" (/private/comment (v))')[-1].startswith(b"v BAD")
    assert c.run("ok", b"NOOP")[-1].startswith(b"ok OK")


def test_entries_go_with_delete_and_move_with_rename(c):
    assert c.run("c", b"CREATE Projects")[-1].startswith(b"c OK")
    assert c.run("s", b'SETMETADATA Projects (/private/comment "plans")')[-1].startswith(b"s OK")
    assert c.run("r", b"RENAME Projects Done")[-1].startswith(b"r OK")
    assert c.run("g", b"GETMETADATA Done /private/comment")[0] == b'* METADATA "Done" (/private/comment "plans")\r\n'
    assert c.run("d", b"DELETE Done")[-1].startswith(b"d OK")
    assert c.run("c2", b"CREATE Done")[-1].startswith(b"c2 OK")
    assert c.run("g2", b"GETMETADATA Done /private/comment")[0] == b'* METADATA "Done" (/private/comment NIL)\r\n'
    assert c.run("d2", b"DELETE Done")[-1].startswith(b"d2 OK")


def test_the_store_on_both_engines(registry, store):
    """The entries' SQL (NULL folder for the server, value lengths, the account's lock) on
    SQLite and PostgreSQL."""
    import datetime as dt

    from sqlalchemy import text

    from mailserver.errors import MetadataTooLarge, MetadataTooMany
    from mailserver.identity import idnumber
    from mailserver.registry.citizens import add_citizen
    from mailserver.store import annotations as an

    made = add_citizen(registry, "张伟", idnumber.make("330106", dt.date(1980, 1, 1), 1), password="long enough pw")
    with store.reader() as s:
        account = s.execute(text("SELECT id FROM account WHERE address = :a"), {"a": made.address}).scalar()
    an.set_metadata(store, account, "", [("/private/a", b"\0\xff"), ("/private/a/b", b"xyz")], 10, 3)
    an.set_metadata(store, account, "INBOX", [("/private/a", b"inbox")], 10, 3)
    found = an.get_metadata(store, account, "", ["/private/a"], an.INFINITY, 2)
    assert found == an.Found([("/private/a", b"\0\xff")], 3)
    assert an.get_metadata(store, account, "INBOX", ["/private/a"]).entries == [("/private/a", b"inbox")]
    with pytest.raises(MetadataTooMany):
        an.set_metadata(store, account, "INBOX", [("/private/c", b"1")], 10, 3)
    with pytest.raises(MetadataTooLarge):
        an.set_metadata(store, account, "INBOX", [("/private/a", b"x" * 11)], 10, 3)
    an.set_metadata(store, account, "", [("/private/a", None)], 10, 3)
    assert an.get_metadata(store, account, "", ["/private/a"], 1).entries == [("/private/a/b", b"xyz")]

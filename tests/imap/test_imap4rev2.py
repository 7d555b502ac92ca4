"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, chosen with ENABLE IMAP4rev2, and SEARCHRES (RFC 5182),
which IMAP4rev2 includes, over a raw socket: after ENABLE the session has no \\Recent, SEARCH is
answered with ESEARCH, mailbox names are UTF-8, STATUS tells DELETED; a rev1 session on the same
folder keeps its \\Recent."""
from __future__ import annotations

import re

import pytest

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %s\r\n\r\nbody\r\n"


def ok(raw, tag: str, command: str) -> list[bytes]:
    lines = raw.command(tag, command)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


@pytest.fixture
def rev2(server, client):
    for subject in (b"one", b"two", b"three"):
        assert client.append("INBOX", None, None, RAW % subject)[0] == "OK"
    raw = server.raw()
    assert ok(raw, "e", "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2\r\n"]
    yield raw, client
    raw.close()


def test_both_revisions_are_advertised(server, client):
    caps = client.capability()[1][0].decode().split()
    assert {"IMAP4rev1", "IMAP4rev2", "SEARCHRES"} <= set(caps)


def test_no_recent_after_enable(rev2):
    raw, b = rev2
    lines = ok(raw, "s", "SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in lines
    # RFC 9051 6.3.2: SELECT names the mailbox in a LIST response with its attributes
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' in lines
    assert not any(b"RECENT" in x or b"UNSEEN" in x or b"\\Recent" in x for x in lines)
    fetched = ok(raw, "f", "FETCH 1:* (FLAGS)")
    assert len(fetched) == 3 and not any(b"\\Recent" in x for x in fetched)
    assert b.append("INBOX", None, None, RAW % b"four")[0] == "OK"
    news = ok(raw, "n", "NOOP")
    assert news == [b"* 4 EXISTS\r\n"]
    # the rev2 session claimed nothing: a rev1 session still gets all four as \Recent
    typ, data = b.select("INBOX")
    assert b.response("RECENT")[1] == [b"4"]
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n' in ok(raw, "x", "EXAMINE Trash")


def test_search_answers_esearch(rev2):
    raw, _ = rev2
    ok(raw, "s", "SELECT INBOX")
    assert ok(raw, "a", "SEARCH ALL") == [b'* ESEARCH (TAG "a") ALL 1:3\r\n']
    assert ok(raw, "b", "UID SEARCH SUBJECT two") == [b'* ESEARCH (TAG "b") UID ALL 2\r\n']
    assert ok(raw, "c", "SEARCH SUBJECT nothing") == [b'* ESEARCH (TAG "c")\r\n']


def test_status_deleted_and_utf8_names(rev2):
    raw, b = rev2
    b.select("INBOX")
    b.store("1,3", "+FLAGS", "\\Deleted")
    assert ok(raw, "t", "STATUS INBOX (MESSAGES DELETED)") == [b'* STATUS "INBOX" (MESSAGES 3 DELETED 2)\r\n']
    ok(raw, "c", 'CREATE "通知/税务"')
    listed = ok(raw, "l", 'LIST "" "通知*"')
    assert '* LIST (\\HasChildren) "/" "通知"\r\n'.encode() in listed
    assert '* LIST (\\HasNoChildren) "/" "通知/税务"\r\n'.encode() in listed
    # a parent with children cannot go (RFC 9051 7.1 HASCHILDREN)
    assert raw.command("d", 'DELETE "通知"')[-1].startswith(b"d NO [HASCHILDREN]")


def test_enable_is_refused_while_selected_and_rev1_is_unchanged(server, client):
    assert client.append("INBOX", None, None, RAW % b"x")[0] == "OK"
    raw = server.raw()
    try:
        lines = ok(raw, "s", "SELECT INBOX")
        assert b"* 1 RECENT\r\n" in lines
        assert ok(raw, "a", "SEARCH ALL") == [b"* SEARCH 1\r\n"]
        assert ok(raw, "e", "ENABLE IMAP4rev2") == [b"* ENABLED\r\n"]
        assert ok(raw, "b", "SEARCH ALL") == [b"* SEARCH 1\r\n"]
    finally:
        raw.close()


def test_searchres_saves_a_result_for_dollar(rev2):
    raw, b = rev2
    ok(raw, "s", "SELECT INBOX")
    # SAVE alone: nothing but OK; "$" then names the result in FETCH, STORE and SEARCH
    assert ok(raw, "a", "SEARCH RETURN (SAVE) OR SUBJECT one SUBJECT three") == []
    fetched = ok(raw, "f", "FETCH $ (UID)")
    assert fetched == [b"* 1 FETCH (UID 1)\r\n", b"* 3 FETCH (UID 3)\r\n"]
    ok(raw, "t", "UID STORE $ +FLAGS.SILENT (\\Flagged)")
    assert ok(raw, "g", "SEARCH FLAGGED") == [b'* ESEARCH (TAG "g") ALL 1,3\r\n']
    assert ok(raw, "h", "SEARCH $ SUBJECT three") == [b'* ESEARCH (TAG "h") ALL 3\r\n']
    # SAVE with MIN: only the smallest is kept; with other options, they are answered
    assert ok(raw, "m", "SEARCH RETURN (SAVE MIN COUNT) ALL") == [b'* ESEARCH (TAG "m") MIN 1 COUNT 3\r\n']
    assert len(ok(raw, "k", "FETCH $ (UID)")) == 3
    assert ok(raw, "n", "SEARCH RETURN (MIN SAVE) ALL") == [b'* ESEARCH (TAG "n") MIN 1\r\n']
    assert ok(raw, "o", "FETCH $ (UID)") == [b"* 1 FETCH (UID 1)\r\n"]
    # an expunged message leaves the saved result
    b.select("INBOX")
    b.store("1", "+FLAGS", "\\Deleted")
    b.expunge()
    lines = ok(raw, "p", "NOOP")
    assert b"* 1 EXPUNGE\r\n" in lines
    assert ok(raw, "q", "FETCH $ (UID)") == []
    # a new selection starts with an empty result
    ok(raw, "r", "SEARCH RETURN (SAVE) ALL")
    ok(raw, "s2", "SELECT INBOX")
    assert ok(raw, "u", "UID FETCH $ (UID)") == []


def test_unauthenticate_returns_to_the_greeting_state(server, client):
    """RFC 8437: UNAUTHENTICATE ends the login, the selection, NOTIFY and what was ENABLEd;
    the connection then logs in again, as another citizen too."""
    from .conftest import PASSWORD

    raw = server.raw()
    try:
        ok(raw, "e", "ENABLE IMAP4rev2 CONDSTORE")
        ok(raw, "s", "SELECT INBOX")
        ok(raw, "n", "NOTIFY SET (PERSONAL (MessageNew MessageExpunge))")
        assert ok(raw, "u", "UNAUTHENTICATE") == []
        assert raw.command("x", "SELECT INBOX")[-1].startswith(b"x BAD")  # not authenticated
        caps = ok(raw, "c", "CAPABILITY")[0].split()
        assert b"AUTH=PLAIN" in caps and b"NOTIFY" not in caps
        assert client.append("Archive", None, None, RAW % b"x")[0] == "OK"  # told to nobody
        assert ok(raw, "l", f'LOGIN "{server.users[1][0]}" "{PASSWORD}"') == []
        lines = ok(raw, "s2", "SELECT INBOX")
        assert b"* 0 EXISTS\r\n" in lines and b"* 0 RECENT\r\n" in lines  # rev1 again, the other's INBOX
        assert ok(raw, "a", "SEARCH ALL") == [b"* SEARCH\r\n"]
    finally:
        raw.close()


def test_unauthenticate_stays_within_the_prelogin_bound(tmp_path):
    from .conftest import Raw, server_with

    with server_with(tmp_path / "data", "imap.max_preauth_connections_per_ip=1") as running:
        a = running.raw()  # logged in: its pre-login place is free again
        waiting = Raw(running.port)  # takes that place
        try:
            assert waiting.greeting.startswith(b"* OK")
            assert a.command("u", "UNAUTHENTICATE")[-1].startswith(b"u NO [UNAVAILABLE]")
            ok(a, "s", "SELECT INBOX")  # still logged in
            # once the other logs in, its place is free (the LOGIN's OK comes after it is given back)
            from .conftest import PASSWORD

            ok(waiting, "l", f'LOGIN "{running.users[1][0]}" "{PASSWORD}"')
            assert ok(a, "v", "UNAUTHENTICATE") == []
        finally:
            waiting.close()
            a.close()

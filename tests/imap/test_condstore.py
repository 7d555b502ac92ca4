"""CONDSTORE (RFC 7162 3.1, 3.2), ESEARCH (RFC 4731) and STATUS=SIZE (RFC 8438), over real sockets
with imaplib (``_simple_command`` for the modifiers imaplib has no method for) and ``Raw`` for
exact lines; what the server says is checked against the database."""
from __future__ import annotations

import re

from sqlalchemy import select

from mailserver.store.mailstore import deliver
from mailserver.store.models import Folder, Message
from mailserver.store.models.mail import FLAGGED, SEEN

from .test_protocol import notice, untagged

FETCH_MODSEQ = re.compile(rb"^(\d+) \(.*MODSEQ \((\d+)\)")


def _db(server, folder: str = "INBOX", user: int = 0) -> dict[int, tuple[int, int]]:
    """uid -> (flags, modseq) of one folder, and the folder's HIGHESTMODSEQ under key 0."""
    with server.ctx.store.reader() as s:
        f = s.execute(select(Folder.id, Folder.highestmodseq).where(Folder.account_id == server.users[user][1],
                                                                    Folder.name == folder)).one()
        rows = s.execute(select(Message.uid, Message.flags, Message.modseq).where(Message.folder_id == f.id))
        out = {uid: (flags, modseq) for uid, flags, modseq in rows}
    out[0] = (0, f.highestmodseq)
    return out


def _deliver(server, n: int, user: int = 0) -> None:
    for i in range(n):
        deliver(server.ctx.store, notice(f"第{i}封"), [server.users[user][1]])


def _highestmodseq(client) -> int:
    for item in untagged(client, "OK"):
        m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", item)
        if m:
            return int(m.group(1))
    raise AssertionError("no HIGHESTMODSEQ")


def _modseqs(fetches: list) -> dict[int, int]:
    """sequence number -> MODSEQ from FETCH responses (each asserted to carry one)."""
    out = {}
    for f in fetches:
        m = FETCH_MODSEQ.match(f)
        assert m, f
        out[int(m.group(1))] = int(m.group(2))
    return out


def test_capabilities_advertise_condstore_esearch_status_size(client):
    caps = client._simple_command("CAPABILITY")
    text = untagged(client, "CAPABILITY")[0].split()
    assert caps[0] == "OK"
    for cap in (b"CONDSTORE", b"ESEARCH", b"STATUS=SIZE", b"ENABLE"):
        assert cap in text


def test_enable_condstore_answers_enabled_and_fetch_flags_carries_modseq(server, client):
    _deliver(server, 2)
    client.select("INBOX")
    typ, data = client.fetch("1:2", "(FLAGS)")
    assert typ == "OK" and all(b"MODSEQ" not in d for d in data)  # not enabled yet
    client.unselect()  # imaplib sends ENABLE only in the authenticated state (RFC 5161)
    typ, _ = client._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK" and untagged(client, "ENABLED") == [b"CONDSTORE"]
    client.select("INBOX")
    typ, data = client.fetch("1:2", "(FLAGS)")
    db = _db(server)
    assert _modseqs(data) == {1: db[1][1], 2: db[2][1]}
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")  # the UID FLAGS hot path too
    assert _modseqs(data) == {1: db[1][1], 2: db[2][1]}


def test_select_condstore_enables_and_examine_too(server):
    _deliver(server, 1)
    raw = server.raw()
    lines = raw.command("s", "SELECT INBOX (CONDSTORE)")
    assert lines[-1].startswith(b"s OK")
    hms = _db(server)[0][1]
    assert any(f"[HIGHESTMODSEQ {hms}]".encode() in line for line in lines)
    lines = raw.command("f", "FETCH 1 (FLAGS)")
    assert lines[0] == f"* 1 FETCH (UID 1 FLAGS (\\Recent) MODSEQ ({_db(server)[1][1]}))\r\n".encode(), lines
    other = server.raw()
    assert other.command("e", "EXAMINE INBOX (CONDSTORE)")[-1].startswith(b"e OK")
    assert b"MODSEQ" in other.command("f", "FETCH 1 FLAGS")[0]
    plain = server.raw()
    plain.command("e", "EXAMINE INBOX")
    assert b"MODSEQ" not in plain.command("f", "FETCH 1 FLAGS")[0]
    for r in (raw, other, plain):
        r.close()


def test_other_sessions_flag_change_reaches_a_condstore_session_with_modseq(server):
    _deliver(server, 3)
    a, b, c = server.client(), server.client(), server.client()
    a._simple_command("ENABLE", "CONDSTORE")
    for x in (b, a, c):  # b first: it holds the messages as \Recent
        x.select("INBOX")
        x.untagged_responses.clear()
    b.store("2", "+FLAGS", "(\\Flagged)")
    a.noop()
    c.noop()
    fetches_a = untagged(a, "FETCH")
    fetches_c = untagged(c, "FETCH")
    db = _db(server)
    assert db[2][0] & FLAGGED
    assert fetches_a == [f"2 (UID 2 FLAGS (\\Flagged) MODSEQ ({db[2][1]}))".encode()]
    assert fetches_c == [b"2 (UID 2 FLAGS (\\Flagged))"]  # no CONDSTORE: no MODSEQ
    for x in (a, b, c):
        x.logout()


def test_fetch_changedsince_returns_exactly_the_messages_changed_after(server, client):
    _deliver(server, 4)
    client.select("INBOX")
    start = _highestmodseq(client)
    client.store("2", "+FLAGS", "(\\Seen)")
    after_two = _db(server)[2][1]
    client.store("4", "+FLAGS", "(\\Flagged)")
    typ, data = client._simple_command("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {start})")
    assert typ == "OK"
    fetched = _modseqs(untagged(client, "FETCH"))
    db = _db(server)
    assert fetched == {2: db[2][1], 4: db[4][1]} and db[4][1] > db[2][1] > start
    client._simple_command("UID", "FETCH", "1:*", "(UID)", f"(CHANGEDSINCE {after_two})")
    fetches = untagged(client, "FETCH")
    assert len(fetches) == 1 and fetches[0].startswith(b"4 (UID 4") and f"MODSEQ ({db[4][1]})".encode() in fetches[0]
    client._simple_command("FETCH", "1,3:4", "(FLAGS)", f"(CHANGEDSINCE {start})")  # several ranges
    assert _modseqs(untagged(client, "FETCH")) == {4: db[4][1]}
    client._simple_command("FETCH", "1:4", "(MODSEQ FLAGS RFC822.SIZE)", f"(CHANGEDSINCE {start})")  # general path
    assert _modseqs(untagged(client, "FETCH")) == {2: db[2][1], 4: db[4][1]}
    # nothing changed after the folder's HIGHESTMODSEQ
    client._simple_command("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {db[0][1]})")
    assert untagged(client, "FETCH") == []


def test_store_unchangedsince_conflict_reports_modified_and_leaves_that_message(server):
    _deliver(server, 4)
    a, b = server.client(), server.client()
    a.select("INBOX")
    a.store("1", "+FLAGS", "(\\Deleted)")
    a.expunge()  # now sequence number n holds UID n + 1
    base = _db(server)[0][1]
    b.select("INBOX")
    b.store("2", "+FLAGS", "(\\Flagged)")  # UID 3 changes after base
    a.untagged_responses.clear()
    typ, data = a._simple_command("STORE", "1:3", f"(UNCHANGEDSINCE {base})", "+FLAGS", "(\\Seen)")
    assert (typ, data) == ("OK", [b"[MODIFIED 2] conditional STORE failed"])
    db = _db(server)
    assert db[2][0] & SEEN and db[4][0] & SEEN and not db[3][0] & SEEN  # UID 3 left alone
    fetches = untagged(a, "FETCH")
    mods = {int(m.group(1)): int(m.group(2)) for m in (FETCH_MODSEQ.match(f) for f in fetches if b"\\Seen" in f)}
    assert mods == {1: db[2][1], 3: db[4][1]}  # the changed ones, with their new MODSEQ
    # UID STORE: the MODIFIED set is of UIDs; UNCHANGEDSINCE 0 always fails
    typ, data = a._simple_command("UID", "STORE", "2:4", "(UNCHANGEDSINCE 0)", "FLAGS", "(\\Answered)")
    assert (typ, data) == ("OK", [b"[MODIFIED 2:4] conditional STORE failed"])
    assert _db(server) == db  # nothing changed, HIGHESTMODSEQ included
    a.logout()
    b.logout()


def test_store_unchangedsince_silent_sends_modseq_only_for_changed_messages(server):
    _deliver(server, 3)
    raw = server.raw()
    raw.command("s", "SELECT INBOX")
    raw.command("x", "STORE 3 +FLAGS.SILENT (\\Flagged)")
    base = _db(server)[3][1] - 1
    lines = raw.command("t", f"STORE 1:3 (UNCHANGEDSINCE {base}) +FLAGS.SILENT (\\Seen)")
    db = _db(server)
    # the first CONDSTORE enabling command while selected: HIGHESTMODSEQ first (RFC 7162 3.1)
    assert lines == [f"* OK [HIGHESTMODSEQ {base + 1}] highest\r\n".encode(),
                     f"* 1 FETCH (MODSEQ ({db[1][1]}))\r\n".encode(), f"* 2 FETCH (MODSEQ ({db[2][1]}))\r\n".encode(),
                     b"t OK [MODIFIED 3] conditional STORE failed\r\n"]
    assert db[1][1] == db[2][1] == db[0][1]  # HIGHESTMODSEQ is the highest MODSEQ
    lines = raw.command("u", f"UID STORE 1:2 (UNCHANGEDSINCE {db[0][1]}) -FLAGS (\\Seen)")
    db2 = _db(server)
    assert lines == [f"* 1 FETCH (UID 1 FLAGS (\\Recent) MODSEQ ({db2[1][1]}))\r\n".encode(),
                     f"* 2 FETCH (UID 2 FLAGS (\\Recent) MODSEQ ({db2[2][1]}))\r\n".encode(), b"u OK completed\r\n"]
    assert db2[1][1] > db[0][1]
    raw.close()


def test_search_modseq_and_its_highest_modseq(server, client):
    _deliver(server, 4)
    client.select("INBOX")
    start = _db(server)[0][1]
    client.store("2", "+FLAGS", "(\\Seen)")
    client.store("3", "+FLAGS", "(\\Seen)")
    db = _db(server)
    typ, data = client.search(None, "MODSEQ", str(start + 1))
    assert typ == "OK" and data == [f"2 3 (MODSEQ {db[3][1]})".encode()]
    typ, data = client.uid("SEARCH", "MODSEQ", '"/flags/\\\\seen"', "all", str(db[3][1]))
    assert data == [f"3 (MODSEQ {db[3][1]})".encode()]
    typ, data = client.search(None, "MODSEQ", str(db[0][1] + 1))
    assert data == [b""]  # nothing: a plain empty SEARCH, no MODSEQ
    typ, data = client.search(None, "OR", "MODSEQ", str(start + 1), "UID", "1")
    assert data == [f"1 2 3 (MODSEQ {db[3][1]})".encode()]


def test_esearch_min_max_count_all_compressed_and_empty(server):
    _deliver(server, 9)
    raw = server.raw()
    raw.command("s", "SELECT INBOX")
    raw.command("f", "STORE 2,4:5,9 +FLAGS.SILENT (\\Flagged)")
    raw.command("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    raw.command("e", "EXPUNGE")  # sequence number n is now UID n + 1
    lines = raw.command("a1", "UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    assert lines == [b'* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 4 ALL 2,4:5,9\r\n', b"a1 OK completed\r\n"]
    lines = raw.command("a2", "SEARCH RETURN (COUNT MIN) FLAGGED")
    assert lines[0] == b'* ESEARCH (TAG "a2") MIN 1 COUNT 4\r\n'
    lines = raw.command("a3", "SEARCH RETURN () FLAGGED")  # () means ALL
    assert lines[0] == b'* ESEARCH (TAG "a3") ALL 1,3:4,8\r\n'
    lines = raw.command("a4", "UID SEARCH RETURN (MIN MAX ALL) DELETED")
    assert lines == [b'* ESEARCH (TAG "a4") UID\r\n', b"a4 OK completed\r\n"]
    lines = raw.command("a5", "SEARCH RETURN (COUNT) DELETED")
    assert lines[0] == b'* ESEARCH (TAG "a5") COUNT 0\r\n'
    lines = raw.command("a6", "SEARCH FLAGGED")  # plain SEARCH is unchanged
    assert lines[0] == b"* SEARCH 1 3 4 8\r\n"
    # SEARCHRES (RFC 5182): SAVE alone keeps the result for "$" and answers nothing but OK
    assert raw.command("a7", "SEARCH RETURN (SAVE) ALL") == [b"a7 OK completed\r\n"]
    assert raw.command("a8", "SEARCH RETURN (FROB) ALL")[-1].startswith(b"a8 BAD")
    raw.close()


def test_esearch_with_modseq_key_adds_the_highest_modseq(server, client):
    _deliver(server, 3)
    client.select("INBOX")
    start = _db(server)[0][1]
    client.store("1", "+FLAGS", "(\\Seen)")
    client.store("3", "+FLAGS", "(\\Seen)")
    db = _db(server)
    client._simple_command("SEARCH", "RETURN", "(ALL)", "MODSEQ", str(start + 1))
    assert untagged(client, "ESEARCH")[-1].endswith(f"ALL 1,3 MODSEQ {db[3][1]}".encode())
    client._simple_command("SEARCH", "RETURN", "(MIN)", "MODSEQ", str(start + 1))
    assert untagged(client, "ESEARCH")[-1].endswith(f"MIN 1 MODSEQ {db[1][1]}".encode())


def test_status_size_highestmodseq_and_modseq_moves_on_every_change(server, client):
    _deliver(server, 3)
    client.select("INBOX")
    typ, data = client.fetch("1:3", "(RFC822.SIZE MODSEQ)")
    sizes = [int(re.search(rb"RFC822.SIZE (\d+)", d).group(1)) for d in data]
    typ, data = client.status("INBOX", "(MESSAGES SIZE HIGHESTMODSEQ)")
    db = _db(server)
    assert data == [f'"INBOX" (MESSAGES 3 SIZE {sum(sizes)} HIGHESTMODSEQ {db[0][1]})'.encode()]
    assert db[0][1] == max(m for u, (_, m) in db.items() if u)
    seen = db[0][1]
    # every change raises the MODSEQ of what it touched, and HIGHESTMODSEQ stays the highest
    client.store("1", "+FLAGS", "(\\Flagged)")
    assert _db(server)[1][1] > seen
    seen = _db(server)[0][1]
    client.append("INBOX", None, None, notice("追加"))
    db = _db(server)
    assert db[4][1] > seen and db[0][1] == db[4][1]
    seen = db[0][1]
    client.copy("2", "INBOX")
    db = _db(server)
    assert db[5][1] > seen and db[0][1] == db[5][1]
    archive_before = _db(server, "Archive")[0][1]
    assert client.xatom("MOVE", "3", "Archive")[0] == "OK"
    archive = _db(server, "Archive")
    assert archive[1][1] > archive_before and archive[0][1] == archive[1][1]
    # a STORE that changes nothing changes no MODSEQ, HIGHESTMODSEQ included
    before = _db(server)
    client.store("1", "+FLAGS", "(\\Flagged)")
    assert _db(server) == before
    typ, data = client.status("Archive", "(SIZE)")
    assert data == [f'"Archive" (SIZE {sizes[2]})'.encode()]
    typ, data = client.status("INBOX", "(HIGHESTMODSEQ)")
    assert data == [f'"INBOX" (HIGHESTMODSEQ {before[0][1]})'.encode()]


def test_status_highestmodseq_enables_condstore(server, client):
    _deliver(server, 1)
    client.status("INBOX", "(HIGHESTMODSEQ)")
    client.select("INBOX")
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"MODSEQ" in data[0]


def test_condstore_syntax_errors_are_bad_and_the_session_goes_on(server):
    _deliver(server, 1)
    raw = server.raw()
    raw.command("s", "SELECT INBOX")
    for i, bad in enumerate(("FETCH 1 (FLAGS) (CHANGEDSINCE 0)", "FETCH 1 (FLAGS) (CHANGEDSINCE x)",
                             "FETCH 1 (FLAGS) (CHANGEDSINCE)", "FETCH 1 (FLAGS) (VANISHED)",
                             "UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
                             "STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)", "STORE 1 (UNCHANGEDSINCE) FLAGS (\\Seen)",
                             "STORE 1 (FROB 1) +FLAGS (\\Seen)", "SEARCH MODSEQ", "SEARCH MODSEQ x",
                             "SEARCH MODSEQ \"/flags/\\\\seen\" frob 1", "SELECT INBOX (QRESYNC)",
                             "FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)")):
        lines = raw.command(f"b{i}", bad)
        assert lines[-1].startswith(f"b{i} BAD".encode()), (bad, lines)
    assert not _db(server)[1][0] & SEEN
    assert raw.command("n", "NOOP")[-1] == b"n OK completed\r\n"
    raw.close()

"""QRESYNC (RFC 7162 3.2) over real sockets: ENABLE QRESYNC, SELECT/EXAMINE (QRESYNC (...)) with
VANISHED (EARLIER) and the flag changes a reconnecting client missed, UID FETCH (CHANGEDSINCE n
VANISHED), VANISHED instead of EXPUNGE, [CLOSED]; and the expunge tombstones behind it, written
on SQLite and PostgreSQL. What the server says is checked against the database."""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select, text, update

from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from mailserver.store import mailboxes as mb
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, Expunged, Folder
from mailserver.store.models.mail import DELETED

from .conftest import PASSWORD, Raw
from .test_condstore import _db, _deliver
from .test_protocol import notice

FETCH_LINE = re.compile(rb"^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)\r\n$")


def _login(server, user: int = 0, enable: bool = True) -> Raw:
    raw = server.raw(user)
    if enable:
        assert raw.command("e", "ENABLE QRESYNC") == [b"* ENABLED QRESYNC\r\n", b"e OK completed\r\n"]
    return raw


def _code(lines: list[bytes], name: str) -> int:
    for line in lines:
        m = re.search(rb"\[" + name.encode() + rb" (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {name} in {lines}")


def _state(server) -> tuple[int, int]:
    """(UIDVALIDITY, HIGHESTMODSEQ) a client learns from SELECT, then logs out."""
    raw = _login(server)
    lines = raw.command("s", "SELECT INBOX")
    raw.command("o", "LOGOUT")
    raw.close()
    return _code(lines, "UIDVALIDITY"), _code(lines, "HIGHESTMODSEQ")


def _uids_by_seq(raw: Raw) -> dict[int, int]:
    lines = raw.command("u", "FETCH 1:* (UID)")
    assert lines[-1] == b"u OK completed\r\n", lines
    return {int(m.group(1)): int(m.group(2)) for m in (re.match(rb"^\* (\d+) FETCH \(UID (\d+)", x) for x in lines[:-1])}


def _fetches(lines: list[bytes]) -> dict[int, tuple[int, bytes, int]]:
    """uid -> (sequence number, flags, MODSEQ) of the FETCH lines (each asserted well-formed)."""
    out = {}
    for line in lines:
        if b" FETCH " in line:
            m = FETCH_LINE.match(line)
            assert m, line
            out[int(m.group(2))] = (int(m.group(1)), m.group(3), int(m.group(4)))
    return out


def _vanished(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* VANISHED")]


def _changes_by_another_session(server) -> None:
    """Another session expunges UIDs 2, 3, 4 and 8 (3 flagged first), moves 10 out, flags 6 and 9."""
    b = server.client()
    b.select("INBOX")
    b.uid("STORE", "3", "+FLAGS", "(\\Flagged)")
    b.uid("STORE", "2:4,8", "+FLAGS", "(\\Deleted)")
    assert b.expunge()[0] == "OK"
    assert b.uid("MOVE", "10", "Archive")[0] == "OK"
    b.uid("STORE", "6", "+FLAGS", "(\\Flagged)")
    b.uid("STORE", "9", "+FLAGS", "(\\Seen)")
    b.logout()


def test_capability_and_enable(server):
    raw = _login(server, enable=False)
    caps = raw.command("c", "CAPABILITY")[0].split()
    assert b"QRESYNC" in caps and b"CONDSTORE" in caps
    assert raw.command("e", "ENABLE CONDSTORE QRESYNC") == [b"* ENABLED CONDSTORE QRESYNC\r\n", b"e OK completed\r\n"]
    raw.close()
    raw = _login(server)  # ENABLE QRESYNC alone answers QRESYNC alone, and implies CONDSTORE
    _deliver(server, 1)
    raw.command("s", "SELECT INBOX")
    assert b"MODSEQ" in raw.command("f", "FETCH 1 (FLAGS)")[0]
    raw.close()


def test_select_qresync_reports_exactly_what_was_missed(server):
    _deliver(server, 10)
    uidvalidity, modseq = _state(server)
    _changes_by_another_session(server)
    db = _db(server)
    raw = _login(server)
    lines = raw.command("s", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
    assert lines[-1] == b"s OK [READ-WRITE] selected\r\n"
    assert _vanished(lines) == [b"* VANISHED (EARLIER) 2:4,8,10\r\n"]
    # after the usual SELECT responses: VANISHED (EARLIER), then the FETCHes, then the tagged OK
    first_extra = lines.index(_vanished(lines)[0])
    assert any(b"[HIGHESTMODSEQ" in line for line in lines[:first_extra])
    assert all(b"VANISHED" in line or b" FETCH " in line for line in lines[first_extra:-1])
    fetched = _fetches(lines)
    # UIDs 1 5 6 7 9 remain: 6 is the 3rd message, 9 the 5th
    assert fetched == {6: (3, b"\\Flagged", db[6][1]), 9: (5, b"\\Seen", db[9][1])}
    assert db[0][1] == max(db[6][1], db[9][1]) > modseq
    assert _uids_by_seq(raw) == {1: 1, 2: 5, 3: 6, 4: 7, 5: 9}

    # known UIDs restrict both the VANISHED and the FETCH responses; [CLOSED] ends the old mailbox
    lines = raw.command("k", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3,9))")
    assert lines[0] == b"* OK [CLOSED] previous mailbox closed\r\n"
    assert _vanished(lines) == [b"* VANISHED (EARLIER) 2:3\r\n"]
    assert set(_fetches(lines)) == {9}

    # seq-match-data is accepted (the tombstones make it unnecessary); EXAMINE works alike
    lines = raw.command("x", f"EXAMINE INBOX (QRESYNC ({uidvalidity} {modseq} 1:10 (1:3 1:3)))")
    assert lines[-1] == b"x OK [READ-ONLY] examined\r\n"
    assert _vanished(lines) == [b"* VANISHED (EARLIER) 2:4,8,10\r\n"] and set(_fetches(lines)) == {6, 9}

    # from the newest MODSEQ nothing is missed
    lines = raw.command("n", f"SELECT INBOX (QRESYNC ({uidvalidity} {db[0][1]}))")
    assert not _vanished(lines) and not _fetches(lines) and lines[-1].startswith(b"n OK")

    # another UIDVALIDITY: the client's cache is void, neither VANISHED nor FETCH
    lines = raw.command("w", f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {modseq}))")
    assert lines[-1].startswith(b"w OK") and not _vanished(lines) and not _fetches(lines)
    assert b"* 5 EXISTS\r\n" in lines
    raw.close()


def test_select_qresync_before_the_tombstones_sends_every_uid_not_present(server):
    """RFC 7162 3.2.5.2: expunges older than the tombstones (before migration 0007) are not
    known one by one; every UID in the range that is not present is reported."""
    _deliver(server, 6)
    uidvalidity, modseq = _state(server)
    b = server.client()
    b.select("INBOX")
    b.uid("STORE", "2,5", "+FLAGS", "(\\Deleted)")
    b.expunge()
    b.logout()
    floor = _db(server)[0][1]
    with server.ctx.store.session() as s:
        s.execute(update(Folder).where(Folder.account_id == server.users[0][1], Folder.name == "INBOX")
                  .values(tombstone_floor=floor))
        s.execute(text("DELETE FROM expunged"))  # as if these expunges had happened before tombstones
    raw = _login(server)
    lines = raw.command("s", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
    assert _vanished(lines) == [b"* VANISHED (EARLIER) 2,5\r\n"]
    lines = raw.command("k", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 3:6))")
    assert _vanished(lines) == [b"* VANISHED (EARLIER) 5\r\n"]
    # at or after the floor the tombstones are complete: nothing since
    lines = raw.command("f", f"SELECT INBOX (QRESYNC ({uidvalidity} {floor}))")
    assert not _vanished(lines)
    raw.close()


def test_own_expunge_uid_expunge_and_move_answer_vanished(server):
    _deliver(server, 10)
    raw = _login(server)
    raw.command("s", "SELECT INBOX")
    raw.command("d", "STORE 2:4,6 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("x", "EXPUNGE") == [b"* VANISHED 2:4,6\r\n", b"x OK completed\r\n"]
    assert _uids_by_seq(raw) == {1: 1, 2: 5, 3: 7, 4: 8, 5: 9, 6: 10}
    raw.command("d", "UID STORE 7:9 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("y", "UID EXPUNGE 8:9") == [b"* VANISHED 8:9\r\n", b"y OK completed\r\n"]
    lines = raw.command("m", "MOVE 2 Archive")  # sequence number 2 is UID 5
    assert lines[0].startswith(b"* OK [COPYUID ") and lines[1:] == [b"* VANISHED 5\r\n", b"m OK completed\r\n"]
    assert _uids_by_seq(raw) == {1: 1, 2: 7, 3: 10}
    assert raw.command("c", "CLOSE") == [b"c OK completed\r\n"]  # UID 7 goes silently
    db = _db(server)
    assert sorted(u for u in db if u) == [1, 10]
    with server.ctx.store.reader() as s:
        fid = s.scalar(select(Folder.id).where(Folder.account_id == server.users[0][1], Folder.name == "INBOX"))
        tomb = {uid: m for uid, m in s.execute(select(Expunged.uid, Expunged.modseq).where(Expunged.folder_id == fid))}
    assert sorted(tomb) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert tomb[2] == tomb[3] == tomb[4] == tomb[6] < tomb[8] == tomb[9] < tomb[5] < tomb[7] == db[0][1]
    raw.close()


def test_unsolicited_expunge_arrives_as_vanished_and_sequence_numbers_follow(server):
    _deliver(server, 8)
    raw = _login(server)
    plain = _login(server, enable=False)
    for r in (raw, plain):
        r.command("s", "SELECT INBOX")
    b = server.client()
    b.select("INBOX")
    b.uid("STORE", "3,5:6", "+FLAGS", "(\\Deleted)")
    b.expunge()
    # not during FETCH by sequence number (RFC 3501 7.4.1, RFC 7162 3.2.10) ...
    lines = raw.command("f", "FETCH 1 (FLAGS)")
    assert not _vanished(lines) and b"EXPUNGE" not in b"".join(lines)
    # ... but at the next command that allows it
    lines = raw.command("n", "NOOP")
    assert _vanished(lines) == [b"* VANISHED 3,5:6\r\n"] and b"EXPUNGE" not in b"".join(lines)
    assert _uids_by_seq(raw) == {1: 1, 2: 2, 3: 4, 4: 7, 5: 8}
    # a session without QRESYNC still gets EXPUNGEs, highest sequence number first
    lines = plain.command("n", "NOOP")
    assert [x for x in lines if b"EXPUNGE" in x] == [b"* 6 EXPUNGE\r\n", b"* 5 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n"]
    # IDLE too
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    b.uid("STORE", "7", "+FLAGS", "(\\Deleted)")
    b.expunge()
    line = raw.line()
    if b" FETCH " in line:  # the \Deleted flag may come first, if IDLE woke before the expunge
        assert line.startswith(b"* 4 FETCH (UID 7 FLAGS (\\Deleted \\Recent)"), line
        line = raw.line()
    assert line == b"* VANISHED 7\r\n"
    raw.send(b"DONE\r\n")
    assert raw.line() == b"i OK IDLE terminated\r\n"
    assert _uids_by_seq(raw) == {1: 1, 2: 2, 3: 4, 4: 8}
    b.logout()
    raw.close()
    plain.close()


def test_uid_fetch_changedsince_vanished(server):
    _deliver(server, 6)
    raw = _login(server)
    lines = raw.command("s", "SELECT INBOX")
    modseq = _code(lines, "HIGHESTMODSEQ")
    b = server.client()
    b.select("INBOX")
    b.uid("STORE", "2:3", "+FLAGS", "(\\Deleted)")
    b.expunge()
    b.uid("STORE", "5", "+FLAGS", "(\\Answered)")
    # still in this session's view: told as a plain VANISHED after the command, not EARLIER
    lines = raw.command("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    db = _db(server)
    five = f"(UID 5 FLAGS (\\Answered \\Recent) MODSEQ ({db[5][1]}))\r\n".encode()
    # (then the flag change again, unsolicited, as for any CONDSTORE session: UID 5 is now 3)
    assert lines == [b"* 5 FETCH " + five, b"* VANISHED 2:3\r\n", b"* 3 FETCH " + five, b"f OK completed\r\n"]
    # once told, the same question answers VANISHED (EARLIER) first
    lines = raw.command("g", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines == [b"* VANISHED (EARLIER) 2:3\r\n", b"* 3 FETCH " + five, b"g OK completed\r\n"]
    lines = raw.command("h", f"UID FETCH 3:4 (FLAGS) (VANISHED CHANGEDSINCE {modseq})")  # the range counts
    assert lines == [b"* VANISHED (EARLIER) 3\r\n", b"h OK completed\r\n"]
    lines = raw.command("j", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {db[0][1]} VANISHED)")
    assert lines == [b"j OK completed\r\n"]
    # the last message expunged: "*" still reaches it, and an empty folder still answers
    raw.command("d", "UID STORE 1:* +FLAGS.SILENT (\\Deleted)")
    raw.command("x", "EXPUNGE")
    lines = raw.command("k", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines == [b"* VANISHED (EARLIER) 1:6\r\n", b"k OK completed\r\n"]
    b.logout()
    raw.close()


def test_qresync_without_enable_is_bad(server):
    _deliver(server, 2)
    raw = _login(server, enable=False)
    lines = raw.command("s", "SELECT INBOX")
    uidvalidity, modseq = _code(lines, "UIDVALIDITY"), _code(lines, "HIGHESTMODSEQ")
    assert raw.command("q", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))") == [
        b"q BAD QRESYNC is not enabled (ENABLE QRESYNC first)\r\n"]
    assert raw.command("v", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")[-1].startswith(b"v BAD")
    # still selected, and without QRESYNC an expunge is an EXPUNGE
    raw.command("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert raw.command("x", "EXPUNGE") == [b"* 1 EXPUNGE\r\n", b"x OK completed\r\n"]
    for i, bad in enumerate((f"SELECT INBOX (QRESYNC ({uidvalidity}))", f"SELECT INBOX (QRESYNC (0 {modseq}))",
                             f"SELECT INBOX (QRESYNC ({uidvalidity} 0))", f"SELECT INBOX (QRESYNC ({uidvalidity} 1 1:*))",
                             f"SELECT INBOX (QRESYNC ({uidvalidity} 1 1:2 (1:2)))", "FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",
                             "UID FETCH 1:* FLAGS (VANISHED)", "UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED VANISHED)")):
        assert raw.command(f"b{i}", bad)[-1].startswith(f"b{i} BAD".encode()), bad
    assert raw.command("n", "NOOP")[-1] == b"n OK completed\r\n"
    raw.close()


# -- the tombstones, on both engines ----------------------------------------------------------------

def _tombstones(store, folder_id: int) -> list[tuple[int, int]]:
    with store.reader() as s:
        return [tuple(r) for r in s.execute(select(Expunged.uid, Expunged.modseq)
                                            .where(Expunged.folder_id == folder_id).order_by(Expunged.uid))]


def _folder(store, account_id: int, name: str) -> tuple[int, int]:
    with store.reader() as s:
        f = s.execute(select(Folder.id, Folder.highestmodseq).where(Folder.account_id == account_id,
                                                                    Folder.name == name)).one()
    return f.id, f.highestmodseq


def test_every_way_out_of_a_folder_leaves_a_tombstone(registry, store):
    made = add_citizen(registry, "张伟", idnumber.make("330106", dt.date(1980, 1, 1), 1), password=PASSWORD)
    with store.reader() as s:
        acc = s.scalar(select(Account.id).where(Account.address == made.address))
    for i in range(8):
        deliver(store, notice(f"第{i}封"), [acc])
    inbox, start = _folder(store, acc, "INBOX")
    mb.store_flags(store, acc, inbox, [(2, 3)], "+", DELETED, ())
    assert mb.expunge(store, acc, inbox) == [2, 3]
    inbox_, after_expunge = _folder(store, acc, "INBOX")
    assert after_expunge > start  # an expunge raises HIGHESTMODSEQ
    assert _tombstones(store, inbox) == [(2, after_expunge), (3, after_expunge)]
    mb.copy_messages(store, acc, inbox, [(5, 6)], "Archive", True, 10 ** 9)  # MOVE
    _, after_move = _folder(store, acc, "INBOX")
    assert after_move > after_expunge
    assert _tombstones(store, inbox)[2:] == [(5, after_move), (6, after_move)]
    assert mb.vanished_since(store, acc, inbox, start, None) == [(2, 3), (5, 6)]
    assert mb.vanished_since(store, acc, inbox, after_expunge, None) == [(5, 6)]
    assert mb.vanished_since(store, acc, inbox, start, [(3, 5)]) == [(3, 3), (5, 5)]
    assert mb.vanished_since(store, acc, inbox, start, None, [2, 6]) == [(3, 3), (5, 5)]
    mb.store_flags(store, acc, inbox, [(7, 7)], "+", DELETED, ())
    assert mb.expunge(store, acc, inbox, [(1, 100)]) == [7]  # UID EXPUNGE
    assert _tombstones(store, inbox)[-1] == (7, _folder(store, acc, "INBOX")[1])
    # RENAME INBOX moves its messages out of it
    mb.rename_folder(store, acc, "INBOX", "Old")
    assert [u for u, _ in _tombstones(store, inbox)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert mb.vanished_since(store, acc, inbox, start, None) == [(1, 8)]
    # DELETE of a folder takes its tombstones with it
    old, _ = _folder(store, acc, "Old")
    mb.store_flags(store, acc, old, [(1, 1)], "+", DELETED, ())
    mb.expunge(store, acc, old)
    assert len(_tombstones(store, old)) == 1
    mb.delete_folder(store, acc, "Old")
    assert _tombstones(store, old) == []
    with store.reader() as s:
        assert s.scalar(select(Folder.tombstone_floor).where(Folder.id == inbox)) == 0


def test_old_tombstones_are_pruned_and_resync_stays_correct(registry, store):
    """imap.expunge_history_days: tombstones from before the cutoff go, the folder's floor rises
    to the highest MODSEQ pruned, and a client from before the floor gets every UID that is
    not present (RFC 7162 3.2.5.2) instead of a list with holes."""
    from sqlalchemy import update

    from mailserver.store.tombstones import prune_tombstones

    made = add_citizen(registry, "王芳", idnumber.make("330106", dt.date(1981, 2, 3), 7), password=PASSWORD)
    with store.reader() as s:
        acc = s.scalar(select(Account.id).where(Account.address == made.address))
    for i in range(6):
        deliver(store, notice(f"第{i}封"), [acc])
    inbox, start = _folder(store, acc, "INBOX")
    mb.store_flags(store, acc, inbox, [(1, 2)], "+", DELETED, ())
    mb.expunge(store, acc, inbox)
    _, first = _folder(store, acc, "INBOX")
    mb.store_flags(store, acc, inbox, [(4, 4)], "+", DELETED, ())
    mb.expunge(store, acc, inbox)
    _, second = _folder(store, acc, "INBOX")
    now = dt.datetime.now(dt.timezone.utc)
    with store.session() as s:  # the first expunge happened 100 days ago
        s.execute(update(Expunged).where(Expunged.folder_id == inbox, Expunged.modseq == first)
                  .values(at=now - dt.timedelta(days=100)))
    assert prune_tombstones(store, now - dt.timedelta(days=90)) == (1, 2)
    assert _tombstones(store, inbox) == [(4, second)]
    with store.reader() as s:
        assert s.scalar(select(Folder.tombstone_floor).where(Folder.id == inbox)) == first
    assert mb.vanished_since(store, acc, inbox, first, None) == [(4, 4)]          # from the tombstones
    assert mb.vanished_since(store, acc, inbox, start, None) == [(1, 2), (4, 4)]  # below the floor: not present
    assert prune_tombstones(store, now - dt.timedelta(days=90)) == (0, 0)     # nothing left to prune

"""Subscriptions are a list of their own (RFC 3501 6.3.6, 6.3.9), and LIST-EXTENDED (RFC 5258)
reads it: over a real socket, and the migration that moved the folders' marks into the list."""
from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import text

from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from mailserver.store import mailboxes as mb
from mailserver.store import migrate
from mailserver.store.models import Account

from tests.abuse import assert_responsive_while, city, city_factory  # noqa: F401  (fixtures)

from .conftest import server_with

DEFAULTS = [b"Archive", b"Drafts", b"INBOX", b"Junk", b"Sent", b"Trash"]


def _names(lines: list[bytes], verb: bytes = b"LSUB") -> list[bytes]:
    return [x.rstrip(b"\r\n").rsplit(b" ", 1)[1].strip(b'"') for x in lines if x.startswith(b"* " + verb)]


def test_create_and_delete_leave_the_subscription_list_alone(server):
    raw = server.raw()
    try:
        assert _names(raw.command("a", 'LSUB "" *')) == DEFAULTS  # a new account's folders are subscribed
        assert raw.command("b", "CREATE Work/2026/Tax")[-1].startswith(b"b OK")
        assert _names(raw.command("c", 'LSUB "" *')) == DEFAULTS  # neither the folder nor its parents
        assert raw.command("d", "SUBSCRIBE Work/2026/Tax")[-1].startswith(b"d OK")
        assert raw.command("e", "DELETE Work/2026/Tax")[-1].startswith(b"e OK")
        assert b"Work/2026/Tax" in _names(raw.command("f", 'LSUB "" *'))  # DELETE does not unsubscribe
        assert raw.command("g", "SUBSCRIBE Plans/Later")[-1].startswith(b"g OK")  # no such folder: fine
        assert raw.command("g2", "SUBSCRIBE Plans/Later")[-1].startswith(b"g2 OK")  # twice: still one
        # "%": Plans and Work are not subscribed but have subscribed children that "%" does not reach
        lines = raw.command("h", 'LSUB "" %')
        assert b'* LSUB (\\Noselect) "/" "Plans"\r\n' in lines and b'* LSUB (\\Noselect) "/" "Work"\r\n' in lines
        assert _names(lines) == sorted(DEFAULTS + [b"Plans", b"Work"])
        assert _names(raw.command("i", 'LSUB "" Work/%')) == [b"Work/2026"]
        assert b'* LSUB () "/" "Plans/Later"\r\n' in raw.command("j", 'LSUB "" Plans/*')
        assert raw.command("k", "UNSUBSCRIBE Plans/Later")[-1].startswith(b"k OK")
        assert raw.command("k2", "UNSUBSCRIBE Plans/Later")[-1].startswith(b"k2 OK")  # not subscribed: no error
        assert b"Plans" not in _names(raw.command("l", 'LSUB "" %'))
        # LIST shows folders whether subscribed or not, \Subscribed on those that are
        lines = raw.command("m", 'LIST "" * RETURN (SUBSCRIBED)')
        assert b'* LIST (\\HasChildren) "/" "Work"\r\n' in lines
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n' in lines
    finally:
        raw.close()


def test_rename_moves_the_subscriptions_of_a_folder_and_its_children(server):
    raw = server.raw()
    try:
        for i, command in enumerate(("CREATE Old/Child", "SUBSCRIBE Old", "SUBSCRIBE Old/Child", "RENAME Old New")):
            assert raw.command(f"t{i}", command)[-1].startswith(f"t{i} OK".encode())
        assert _names(raw.command("a", 'LSUB "" *')) == sorted(DEFAULTS + [b"New", b"New/Child"])
    finally:
        raw.close()


def test_list_extended_options_subscribed_nonexistent_and_childinfo(server):
    raw = server.raw()
    try:
        for bad in ('LIST (nosuchoption) "" ""', 'LIST "" "" RETURN (nosuchoption)', 'LIST (RECURSIVEMATCH) "" *',
                    'LIST (REMOTE RECURSIVEMATCH) "" *', 'LIST (SPECIAL-USE RECURSIVEMATCH) "" *'):
            assert raw.command("b", bad)[-1].startswith(b"b BAD"), bad
        for i, command in enumerate(("CREATE Foo/Bar", "CREATE Foo/Baz", "SUBSCRIBE Foo/Bar", "CREATE Moo/Bar",
                                     "SUBSCRIBE Moo", "SUBSCRIBE Moo/Bar", "SUBSCRIBE Gone", "CREATE Gone",
                                     "DELETE Gone")):
            assert raw.command(f"t{i}", command)[-1].startswith(f"t{i} OK".encode())
        lines = raw.command("a", 'LIST (SUBSCRIBED) "" *')
        assert b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"\r\n' in lines
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Foo/Bar"\r\n' in lines
        assert b"Foo" not in _names(lines, b"LIST") and b"Foo/Baz" not in _names(lines, b"LIST")
        lines = raw.command("c", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)')
        assert b'* LIST (\\HasChildren) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))\r\n' in lines  # not subscribed itself
        assert b'* LIST (\\HasChildren \\Subscribed) "/" "Moo" ("CHILDINFO" ("SUBSCRIBED"))\r\n' in lines
        assert b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"\r\n' in lines
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n' in lines
        assert lines[-1].startswith(b"c OK")
        # the listing is the same with REMOTE (there are no remote mailboxes)
        assert raw.command("c", 'LIST (REMOTE SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)') == lines
        lines = raw.command("d", 'LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE SUBSCRIBED)')
        assert _names(lines, b"LIST") == [b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"]
    finally:
        raw.close()


def test_a_subscription_list_is_bounded(tmp_path):
    with server_with(tmp_path, "accounts.max_subscriptions=8") as server:
        raw = server.raw()
        try:  # 6 default folders are subscribed: room for two more
            assert raw.command("a", "SUBSCRIBE One")[-1].startswith(b"a OK")
            assert raw.command("b", "SUBSCRIBE Two")[-1].startswith(b"b OK")
            assert raw.command("c", "SUBSCRIBE Three")[-1].startswith(b"c NO [LIMIT]")
            assert raw.command("d", "SUBSCRIBE Two")[-1].startswith(b"d OK")  # already there
            assert raw.command("e", "SUBSCRIBE " + "x" * 300)[-1].startswith(b"e NO [LIMIT]")  # longer than a folder
            assert raw.command("f", "UNSUBSCRIBE One")[-1].startswith(b"f OK")
            assert raw.command("g", "SUBSCRIBE Three")[-1].startswith(b"g OK")
        finally:
            raw.close()


def _subscribed(store) -> set[tuple[int, str]]:
    with store.engine.connect() as conn:
        return set(conn.execute(text("SELECT account_id, name FROM mailbox_subscription")).all())


def test_the_migration_moves_subscribed_marks_into_the_list_and_back(registry, store):
    made = add_citizen(registry, "张伟", idnumber.make("330106", dt.date(1980, 1, 1), 1), password="long enough pw")
    with store.reader() as s:
        account = s.query(Account.id).filter(Account.address == made.address).scalar()
    mb.create_folder(store, account, "Kept")
    mb.subscribe(store, account, "Kept")
    mb.unsubscribe(store, account, "Junk")
    mb.subscribe(store, account, "No/Folder")  # cannot be a mark on a folder: dropped by the downgrade
    before = _subscribed(store)
    store.engine.dispose()
    migrate.downgrade(store, "0007")
    with store.engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT name, subscribed FROM folder WHERE account_id = :a"), {"a": account}).all())
    assert {n for n, on in marks.items() if on} == {"INBOX", "Sent", "Drafts", "Trash", "Archive", "Kept"}
    assert not marks["Junk"]
    migrate.upgrade(store, "0008")
    assert _subscribed(store) == before - {(account, "No/Folder")}


def test_listing_a_full_subscription_list_leaves_the_loop_free(city_factory):  # noqa: F811
    city = city_factory("accounts.max_subscriptions=500")
    abuser = city.imap(0)
    deep = "/".join(["level"] * 18)
    # pipelined: one write, then every SUBSCRIBE's reply
    tags = [f"s{n}" for n in range(494)]
    abuser.send(b"".join(f"{t} SUBSCRIBE {deep}/{n}\r\n".encode() for n, t in enumerate(tags)))
    answered = 0
    while answered < len(tags):
        line = abuser.readline()
        assert not line.startswith(b"s") or b" OK " in line, line
        answered += line.startswith(b"s")
    assert abuser._simple_command("SUBSCRIBE", "one-too-many")[0] == "NO"  # the list is full
    answers: list[str] = []

    def abuse(stop: threading.Event) -> None:
        while not stop.is_set():
            for args in (("(SUBSCRIBED RECURSIVEMATCH)", '""', "%"), ("(SUBSCRIBED)", '""', "*l*e*v*e*l*9")):
                answers.append(abuser._simple_command("LIST", *args)[0])
            answers.append(abuser._simple_command("LSUB", '""', "%/%")[0])

    assert_responsive_while(city, abuse, warmup=0.3, join=30)
    assert answers and set(answers) == {"OK"}
    abuser.logout()

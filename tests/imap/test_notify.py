"""RFC 5465 NOTIFY over real sockets: session A asks with NOTIFY SET and then only reads (or
idles); session B (imaplib) and the delivery path change the account; A is told, without asking,
of new mail in folders it has not selected, flag changes, expunges, renames, created and deleted
folders and subscription changes; its selected folder's new messages come with the FETCH items
it asked for. Unsupported events get NO [BADEVENT], broken event lists BAD, and a session with
too many notifications waiting is told [NOTIFICATIONOVERFLOW]."""
from __future__ import annotations

import re

import pytest

from mailserver.store.mailstore import deliver

from .conftest import server_with

RAW = b"From: a@x.example\r\nTo: b@y.example\r\nSubject: %s\r\n\r\nbody\r\n"
ALL_EVENTS = "(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"
SUPPORTED = b"BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"


def until(raw, pattern: bytes) -> tuple[bytes, list[bytes]]:
    """Read unsolicited lines until one matches ``pattern``; (that line, the lines before it)."""
    before = []
    while True:
        line = raw.line()
        assert line, before  # the server closed
        if re.search(pattern, line):
            return line, before
        before.append(line)


def ok(raw, tag: str, command: str) -> list[bytes]:
    lines = raw.command(tag, command)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


def uidvalidity(b, name: str) -> int:
    typ, data = b.status(name, "(UIDVALIDITY)")
    assert typ == "OK"
    return int(re.search(rb"UIDVALIDITY (\d+)", data[0])[1])


@pytest.fixture
def watcher(server, client):
    """A: NOTIFY SET for every personal folder and every supported event, nothing selected."""
    a = server.raw()
    ok(a, "n", f"NOTIFY SET (PERSONAL {ALL_EVENTS})")
    yield a, client
    a.close()


def test_notify_is_advertised(server, client):
    assert "NOTIFY" in client.capability()[1][0].decode().split()


def test_new_mail_flag_change_and_expunge_in_a_folder_not_selected(server, watcher):
    a, b = watcher
    validity = uidvalidity(b, "Archive")
    # the STATUS of B's own command comes first; A reads only what the server pushes to it
    assert b.append("Archive", None, None, RAW % b"one")[0] == "OK"
    line, before = until(a, rb"^\* STATUS .Archive. ")
    assert line == f'* STATUS "Archive" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {validity} UNSEEN 1)\r\n'.encode()
    assert before == []
    b.select("Archive")
    b.store("1", "+FLAGS", "\\Seen")
    line, _ = until(a, rb"^\* STATUS .Archive. ")
    assert line == f'* STATUS "Archive" (UIDVALIDITY {validity} UNSEEN 0)\r\n'.encode()
    b.store("1", "+FLAGS", "\\Deleted")
    b.expunge()
    line, _ = until(a, rb"^\* STATUS .Archive. ")
    assert line == f'* STATUS "Archive" (MESSAGES 0 UIDNEXT 2 UIDVALIDITY {validity} UNSEEN 0)\r\n'.encode()
    # the session goes on: a command is answered as ever
    assert a.command("x", "NOOP")[-1] == b"x OK completed\r\n"


def test_mail_delivered_by_the_pipeline_is_told(server, watcher):
    a, b = watcher
    deliver(server.ctx.store, RAW % b"notice", [server.users[0][1]])
    line, _ = until(a, rb"^\* STATUS .INBOX. ")
    assert re.match(rb"\* STATUS .INBOX. \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)\r\n", line)


def test_folder_names_and_subscriptions(server, watcher):
    a, b = watcher
    assert b.create("Work")[0] == "OK"
    assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\HasNoChildren) "/" "Work"\r\n'
    assert b.rename("Work", "Play")[0] == "OK"
    assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\HasNoChildren) "/" "Play" ("OLDNAME" ("Work"))\r\n'
    assert b.subscribe("Play")[0] == "OK"
    assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" "Play"\r\n'
    assert b.unsubscribe("Play")[0] == "OK"
    assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\HasNoChildren) "/" "Play"\r\n'
    assert b.delete("Play")[0] == "OK"
    assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\NonExistent) "/" "Play"\r\n'
    # a folder created after NOTIFY SET is watched too
    assert b.create("Later")[0] == "OK"
    until(a, rb"^\* LIST .* .Later.")
    assert b.append("Later", None, None, RAW % b"x")[0] == "OK"
    assert re.match(rb"\* STATUS .Later. \(MESSAGES 1 UIDNEXT 2 ", until(a, rb"^\* STATUS .Later. ")[0])


def test_told_while_idle(server, watcher):
    a, b = watcher
    a.send(b"i IDLE\r\n")
    assert a.line().startswith(b"+ ")
    assert b.append("Trash", None, None, RAW % b"t")[0] == "OK"
    assert until(a, rb"^\* STATUS .Trash. ")[0].startswith(b'* STATUS "Trash" (MESSAGES 1 UIDNEXT 2 ')
    a.send(b"DONE\r\n")
    assert until(a, rb"^i ")[0] == b"i OK IDLE terminated\r\n"


def test_only_the_named_mailboxes_and_the_status_indicator(server, client):
    a = server.raw()
    try:
        assert client.append("Archive", None, None, RAW % b"old")[0] == "OK"
        validity = uidvalidity(client, "Archive")
        lines = ok(a, "n", "NOTIFY SET STATUS (MAILBOXES Archive (MessageNew MessageExpunge))")
        # STATUS before the tagged OK, for the mailboxes NOTIFY names only
        assert [x for x in lines if x.startswith(b"* STATUS")] == [
            f'* STATUS "Archive" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {validity} UNSEEN 1)\r\n'.encode()]
        assert client.append("Trash", None, None, RAW % b"t")[0] == "OK"
        assert client.append("Archive", None, None, RAW % b"a")[0] == "OK"
        line, before = until(a, rb"^\* STATUS ")
        assert line.startswith(b'* STATUS "Archive" (MESSAGES 2 ') and before == []
        assert not any(b"Trash" in x for x in ok(a, "x", "NOOP"))
    finally:
        a.close()


def test_selected_mailbox_new_messages_with_fetch_items_between_commands(server, client):
    a = server.raw()
    try:
        ok(a, "s", "SELECT INBOX")
        ok(a, "n", "NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))")
        assert client.append("INBOX", None, None, RAW % b"hello")[0] == "OK"
        assert until(a, rb"EXISTS")[0] == b"* 1 EXISTS\r\n"
        fetch, _ = until(a, rb"FETCH")
        assert fetch.startswith(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {")
        assert a.line() == b"Subject: hello\r\n"
        assert a.line() == b"\r\n"
        assert a.line() == b")\r\n"
        # the FETCH did not read the message for the client: it is still unseen
        flags = ok(a, "f", "FETCH 1 (FLAGS)")
        assert len(flags) == 1 and b"FLAGS (" in flags[0] and b"\\Seen" not in flags[0]
        # MessageExpunge under SELECTED: the expunge comes unasked too
        client.select("INBOX")
        client.store("1", "+FLAGS", "\\Deleted")
        client.expunge()
        assert until(a, rb"EXPUNGE")[0] == b"* 1 EXPUNGE\r\n"
    finally:
        a.close()


def test_notify_none_stops_the_telling(server, watcher):
    a, b = watcher
    ok(a, "m", "NOTIFY NONE")
    assert b.append("Archive", None, None, RAW % b"quiet")[0] == "OK"
    assert b.create("Quiet")[0] == "OK"
    lines = ok(a, "x", "NOOP")
    assert lines == []


def test_bad_events_and_bad_lists(server):
    a = server.raw()
    try:
        lines = a.command("a", "NOTIFY SET (PERSONAL (AnnotationChange MessageNew MessageExpunge))")
        assert lines[-1] == b"a NO [" + SUPPORTED + b"] unsupported NOTIFY event\r\n"
        assert a.command("b", "NOTIFY SET (PERSONAL (FlagChange))")[-1].startswith(b"b BAD")
        assert a.command("c", "NOTIFY SET (PERSONAL (MessageNew))")[-1].startswith(b"c BAD")
        assert a.command("d", "NOTIFY SET (SELECTED (MailboxName))")[-1].startswith(b"d BAD")
        assert a.command("e", "NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))")[-1].startswith(b"e BAD")
        assert a.command("f", "NOTIFY SET (NOWHERE (MessageNew MessageExpunge))")[-1].startswith(b"f BAD")
        assert a.command("g", "NOTIFY")[-1].startswith(b"g BAD")
        names = " ".join(f"f{n}" for n in range(101))
        lines = a.command("h", f"NOTIFY SET (MAILBOXES ({names}) (MessageNew MessageExpunge))")
        assert lines[-1].startswith(b"h NO [NOTIFICATIONOVERFLOW]")
        assert a.command("i", "NOOP")[-1] == b"i OK completed\r\n"
    finally:
        a.close()


def test_overflow_ends_notify(tmp_path):
    with server_with(tmp_path / "data", "imap.notify_max_events=2") as running:
        a = running.raw()
        b = running.client()
        try:
            ok(a, "s", "SELECT INBOX")
            ok(a, "n", "NOTIFY SET (SELECTED (MessageNew (UID FLAGS) MessageExpunge)) (PERSONAL (MessageNew "
                       "MessageExpunge))")
            # one new message: its FETCH; then three in one write: more FETCHes than may wait.
            # (Collected with a NOOP: what is asked here is the bound, not when it is told.)
            deliver(running.ctx.store, RAW % b"1", [running.users[0][1]])
            lines = ok(a, "x", "NOOP")
            assert b"* 1 EXISTS\r\n" in lines and any(x.startswith(b"* 1 FETCH (UID 1 FLAGS") for x in lines)
            from mailserver.store import mailboxes as mb

            items = [mb.ToAppend(RAW % str(n).encode(), 0, None, None) for n in range(3)]
            mb.append_messages(running.ctx.store, running.users[0][1], "INBOX", items, 10 ** 9, False)
            lines = ok(a, "y", "NOOP")
            assert b"* 4 EXISTS\r\n" in lines, lines
            assert lines[-1].startswith(b"* OK [NOTIFICATIONOVERFLOW]"), lines
            assert not any(b"FETCH" in x for x in lines), lines
            # NOTIFY is off: other folders are no longer told
            assert b.append("Archive", None, None, RAW % b"x")[0] == "OK"
            assert not any(b"STATUS" in x for x in ok(a, "x", "NOOP"))
        finally:
            a.close()
            b.logout()



def folder_ids(running) -> dict[str, int]:
    from sqlalchemy import select

    from mailserver.store.models import Folder

    with running.ctx.store.reader() as s:
        rows = s.execute(select(Folder.name, Folder.id).where(Folder.account_id == running.users[0][1])).all()
    return dict(rows)


def test_folders_announced_without_a_change_owe_nothing(tmp_path):
    """A folder announced whose counters did not move (the folder watcher announces each folder
    it sees first, i.e. every folder a NOTIFY SET starts watching; any false yes of the hub) is
    no notification waiting: five such folders under imap.notify_max_events=2 do not end NOTIFY
    (they did, when under load the watcher's poll fell between NOTIFY SET and a delivery)."""
    with server_with(tmp_path / "data", "imap.notify_max_events=2") as running:
        a = running.raw()
        b = running.client()
        try:
            ok(a, "s", "SELECT INBOX")
            ok(a, "n", f"NOTIFY SET (SELECTED (MessageNew (UID FLAGS) MessageExpunge)) (PERSONAL {ALL_EVENTS})")
            ids = folder_ids(running)
            assert len(ids) > 3
            running.ctx.hub.changed(ids.values())
            assert ok(a, "x", "NOOP") == []
            # NOTIFY goes on: a real change is told
            assert b.append("Archive", None, None, RAW % b"x")[0] == "OK"
            assert until(a, rb"^\* STATUS .Archive. ")[0].startswith(b'* STATUS "Archive" (MESSAGES 1 ')
        finally:
            a.close()
            b.logout()


def test_more_folders_changed_than_may_wait_end_notify(tmp_path):
    """Three folders other than the selected one changed before the session reports: three STATUS
    owed under imap.notify_max_events=2, told as [NOTIFICATIONOVERFLOW] alone; the session goes on.
    Without the folder watcher, whose poll could tell the session of the first writes before
    the hub tells it of all three."""
    from mailserver.provision import prepare
    from tests.conftest import make_config

    from .conftest import start_server

    cfg = make_config(tmp_path / "data", "imap.notify_max_events=2")
    prepare(cfg)
    running = start_server(cfg, watcher_on=False)
    try:
        a = running.raw()
        try:
            ok(a, "s", "SELECT INBOX")
            ok(a, "n", f"NOTIFY SET (PERSONAL {ALL_EVENTS})")
            from mailserver.store import mailboxes as mb

            account = running.users[0][1]
            with running.ctx.hub.held():  # the three announced together, after the last write
                for name in ("Archive", "Drafts", "Junk"):
                    mb.append_messages(running.ctx.store, account, name, [mb.ToAppend(RAW % b"n", 0, None, None)],
                                       10 ** 9, False)
            lines = ok(a, "x", "NOOP")
            assert len(lines) == 1 and lines[0].startswith(b"* OK [NOTIFICATIONOVERFLOW]"), lines
            assert a.command("y", "NOOP")[-1] == b"y OK completed\r\n"
        finally:
            a.close()
    finally:
        running._stop()


def test_another_node_creates_and_delivers_on_postgresql(pg_url, tmp_path):
    """PostgreSQL: a folder created and mail delivered by another process (another node) reach a
    NOTIFY session by LISTEN/NOTIFY: the folder list as an account payload, the mail as the
    folder's."""
    import subprocess
    import sys
    import textwrap

    from mailserver.cli.init import prepare
    from tests.conftest import make_config

    from .conftest import start_server

    cfg = make_config(tmp_path / "pg", store_url=pg_url)
    prepare(cfg)
    server = start_server(cfg)
    account = server.users[0][1]
    script = textwrap.dedent(f"""
        from mailserver import config as config_mod
        from mailserver.store import mailboxes as mb, open_store
        from mailserver.store.mailstore import deliver
        cfg = config_mod.load(__import__("pathlib").Path({str(cfg.source)!r}), ('store.url="{pg_url}"',))
        store = open_store(cfg)
        mb.create_folder(store, {account}, "Node2")
        deliver(store, b"Subject: from another node\\r\\n\\r\\nhi\\r\\n", [{account}])
        store.dispose()
    """)
    a = server.raw()
    try:
        ok(a, "n", f"NOTIFY SET (PERSONAL {ALL_EVENTS})")
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
        assert until(a, rb"^\* LIST ")[0] == b'* LIST (\\HasNoChildren) "/" "Node2"\r\n'
        assert until(a, rb"^\* STATUS .INBOX. ")[0].startswith(b'* STATUS "INBOX" (MESSAGES 1 UIDNEXT 2 ')
    finally:
        a.close()
        server._stop()


def flagged_after_notify(server, client, group: str):
    """A (raw) with INBOX selected and NOTIFY SET (group); then B flags INBOX's one message."""
    assert client.append("INBOX", None, None, RAW % b"old")[0] == "OK"
    a = server.raw()
    ok(a, "s", "SELECT INBOX")
    ok(a, "n", f"NOTIFY SET ({group})")
    client.select("INBOX")
    client.store("1", "+FLAGS", "\\Flagged")
    return a


def test_selected_delayed_holds_expunges_for_a_command(server, client):
    """SELECTED-DELAYED (RFC 5465 6.1): new messages and flag changes of the selected mailbox
    come unasked, its expunges only with a command that may carry them."""
    a = flagged_after_notify(server, client, "SELECTED-DELAYED (MessageNew MessageExpunge FlagChange)")
    try:
        assert re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(.*\\Flagged", until(a, rb"FETCH")[0])
        client.store("1", "+FLAGS", "\\Deleted")
        client.expunge()
        assert client.append("INBOX", None, None, RAW % b"new")[0] == "OK"
        # the new message is told; the expunge before it is not, yet
        line, before = until(a, rb"EXISTS")
        assert line == b"* 2 EXISTS\r\n"
        assert not any(b"EXPUNGE" in x for x in before), before
        assert b"* 1 EXPUNGE\r\n" in ok(a, "x", "NOOP")
    finally:
        a.close()


def test_subtree_and_subscribed_filters(server, client):
    """SUBTREE Lists watches Lists and the folders below it, SUBSCRIBED the subscribed names as
    the list changes; mail that reaches a new folder at once is told (against an empty folder)."""
    assert client.create("Lists/city")[0] == "OK"
    assert client.create("Other")[0] == "OK"
    a = server.raw()
    try:
        ok(a, "n", "NOTIFY SET (SUBTREE Lists (MessageNew MessageExpunge)) (SUBSCRIBED (MessageNew MessageExpunge))")
        assert client.append("Other", None, None, RAW % b"not watched")[0] == "OK"
        assert client.append("Lists/city", None, None, RAW % b"watched")[0] == "OK"
        line, before = until(a, rb"^\* STATUS ")
        assert line.startswith(b'* STATUS "Lists/city" (MESSAGES 1 ') and before == []
        # a folder made below Lists and given mail at once, without waiting
        assert client.create("Lists/new")[0] == "OK"
        assert client.append("Lists/new", None, None, RAW % b"first")[0] == "OK"
        assert until(a, rb"^\* STATUS ")[0].startswith(b'* STATUS "Lists/new" (MESSAGES 1 UIDNEXT 2 ')
        # subscribing Other puts it under the SUBSCRIBED filter
        assert client.subscribe("Other")[0] == "OK"
        ok(a, "x", "NOOP")  # the subscription is seen by now (it is told before the NOOP's OK)
        assert client.append("Other", None, None, RAW % b"now watched")[0] == "OK"
        assert until(a, rb"^\* STATUS ")[0].startswith(b'* STATUS "Other" (MESSAGES 2 ')
    finally:
        a.close()


def test_selected_without_flagchange_leaves_flags_for_a_command(server, client):
    a = flagged_after_notify(server, client, "SELECTED (MessageNew MessageExpunge)")
    try:
        assert client.append("INBOX", None, None, RAW % b"new")[0] == "OK"
        line, before = until(a, rb"EXISTS")  # the new message is pushed
        assert line == b"* 2 EXISTS\r\n"
        lines = before + ok(a, "x", "NOOP")  # the flag change comes with it or with a command
        assert any(re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(.*\\Flagged", x) for x in lines), lines
    finally:
        a.close()

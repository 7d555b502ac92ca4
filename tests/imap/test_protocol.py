"""RFC 3501 and the extensions, over a real socket with the stdlib imaplib."""
from __future__ import annotations

import base64
import imaplib
import re
import socket
import ssl
from email.message import EmailMessage
from email.policy import SMTP
from urllib.parse import quote

import pytest

from mailserver.store.mailstore import deliver

from .conftest import PASSWORD, Raw


def notice(subject="驾驶证到期换证提醒", body="您的驾驶证将于2026年12月1日到期。", sender="traffic@hz.example.cn") -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"交警支队 <{sender}>"
    msg["To"] = "citizen@hz.example.cn"
    msg["Subject"] = subject
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0800"
    msg["Message-ID"] = "<n1@hz.example.cn>"
    msg.set_content(body)
    msg.add_alternative(f"<p>{body}</p>", subtype="html")
    msg.add_attachment("违法记录".encode("utf-8"), maintype="application", subtype="octet-stream",
                       filename="违法记录.txt")
    return bytes(msg)


#: how EmailMessage writes the attachment's name (RFC 2231), as BODYSTRUCTURE carries it
CHINESE_FILENAME_2231 = b"utf-8''" + quote("违法记录.txt").encode()


def untagged(client: imaplib.IMAP4, name: str) -> list:
    return client.untagged_responses.pop(name, [])


def test_greeting_capability_and_logout(server):
    c = server.client(login=False)
    caps = c.capabilities
    assert "IMAP4REV1" in caps and "STARTTLS" in caps and "AUTH=PLAIN" in caps and "LITERAL+" in caps
    assert c.logout()[0] == "BYE"


def test_login_wrong_password_then_right_one(server):
    c = server.client(login=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(server.users[0][0], "wrong")
    typ, data = c.login(server.users[0][0], PASSWORD)
    assert typ == "OK" and b"CAPABILITY" in data[0] and b"UIDPLUS" in data[0]
    c.logout()


def test_authenticate_plain_with_sasl_ir(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    f = sock.makefile("rwb")
    f.readline()
    token = base64.b64encode(f"\0{server.users[0][0]}\0{PASSWORD}".encode()).decode()
    f.write(f"a AUTHENTICATE PLAIN {token}\r\n".encode())
    f.flush()
    assert f.readline().startswith(b"a OK")
    f.write(b"b AUTHENTICATE PLAIN\r\n")  # already authenticated: wrong state
    f.flush()
    assert f.readline().startswith(b"b BAD")
    sock.close()


def test_authenticate_plain_with_continuation(server):
    c = server.client(login=False)
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{server.users[1][0]}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_logindisabled_without_tls_outside_development(tmp_path):
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "prod", "server.development=false")
    prepare(cfg)
    running = start_server(cfg)
    try:
        c = imaplib.IMAP4("127.0.0.1", running.port)
        assert "LOGINDISABLED" in c.capabilities and "AUTH=PLAIN" not in c.capabilities
        assert "AUTH=OAUTHBEARER" not in c.capabilities and "AUTH=XOAUTH2" not in c.capabilities  # tokens too
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login(running.users[0][0], PASSWORD)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(ctx)
        assert "LOGINDISABLED" not in c.capabilities and "STARTTLS" not in c.capabilities
        assert "AUTH=OAUTHBEARER" in c.capabilities and "AUTH=XOAUTH2" in c.capabilities
        assert c.login(running.users[0][0], PASSWORD)[0] == "OK"
        c.logout()
        s = imaplib.IMAP4_SSL("127.0.0.1", running.tls_port, ssl_context=ctx)
        assert s.login(running.users[0][0], PASSWORD)[0] == "OK"
        s.logout()
    finally:
        running._stop()


def test_bad_commands_get_bad_and_the_session_goes_on(server):
    raw = Raw(server.port)
    for i, line in enumerate(("FROB", "FETCH", "SELECT (", 'LOGIN "x', "FETCH 1 FLAGS", "\x01\xff(((")):
        assert raw.command(f"t{i}", line)[-1].startswith(f"t{i} BAD".encode())
    raw.send(b"\r\n")
    assert raw.line().startswith(b"* BAD")
    raw.send(b"l LOGIN " + b"x" * 70000 + b"\r\n")
    assert raw.line().startswith(b"* BAD") or True
    assert raw.command("n", "NOOP")[-1] == b"n OK completed\r\n"
    raw.close()


def test_literal_over_the_limit_is_refused_and_session_continues(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    f = sock.makefile("rwb")
    f.readline()
    f.write(b"a APPEND INBOX {999999999999}\r\n")
    f.flush()
    assert f.readline().startswith(b"a BAD [TOOBIG]")
    f.write(b"b NOOP\r\n")
    f.flush()
    assert f.readline().startswith(b"b OK")
    f.write(b"c APPEND INBOX {999999999999+}\r\n")
    f.flush()
    assert f.readline().startswith(b"* BYE")
    sock.close()


def test_list_has_special_use_children_and_status(client):
    typ, data = client.list()
    lines = [d.decode() for d in data]
    assert '(\\HasNoChildren \\Sent) "/" "Sent"' in lines
    for use in ("Drafts", "Trash", "Junk", "Archive"):
        assert any(f"\\{use})" in ln and ln.endswith(f'"{use}"') for ln in lines)
    client.create("Notices/&TqSQGg-")  # 交通 in modified UTF-7
    typ, data = client._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    assert typ == "OK"
    lists = [d.decode() for d in untagged(client, "LIST")]
    assert '(\\HasChildren) "/" "Notices"' in lists
    assert '(\\HasNoChildren) "/" "Notices/&TqSQGg-"' in lists
    statuses = [d.decode() for d in untagged(client, "STATUS")]
    assert '"INBOX" (MESSAGES 0 UNSEEN 0)' in statuses
    typ, _ = client._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
    assert {ln.decode().rsplit(" ", 1)[1] for ln in untagged(client, "LIST")} == {
        '"Sent"', '"Drafts"', '"Trash"', '"Junk"', '"Archive"'}
    assert client.list('""', '""')[1] == [b'(\\Noselect) "/" ""']
    assert client.list('""', "%")[1][0] is not None


def test_create_delete_rename_subscribe(client):
    assert client.create("Projects/2026")[0] == "OK"
    assert client.create("Projects")[0] == "NO"  # exists (made as the parent)
    assert client.rename("Projects", "Work")[0] == "OK"
    names = {d.decode().rsplit(" ", 1)[1] for d in client.list()[1]}
    assert '"Work/2026"' in names and '"Projects"' not in names
    assert client.delete("Work")[0] == "NO"  # has children
    assert client.delete("Work/2026")[0] == "OK"
    assert client.delete("Sent")[0] == "NO"
    assert client.delete("INBOX")[0] == "NO"
    assert client.unsubscribe("Work")[0] == "OK"
    assert '"Work"' not in {d.decode().rsplit(" ", 1)[1] for d in client.lsub()[1]}
    assert client.subscribe("Work")[0] == "OK"
    assert '"Work"' in {d.decode().rsplit(" ", 1)[1] for d in client.lsub()[1]}
    assert client.select("Nope")[0] == "NO"


def test_rename_inbox_moves_its_messages(server, client):
    client.append("INBOX", None, None, notice())
    client.append("INBOX", None, None, notice("第二封"))
    assert client.rename("INBOX", "Old")[0] == "OK"
    assert client.select("INBOX")[1] == [b"0"]
    assert client.select("Old")[1] == [b"2"]


def test_select_reports_everything(server, client):
    deliver(server.ctx.store, notice(), [server.users[0][1]])
    deliver(server.ctx.store, notice("第二封"), [server.users[0][1]])
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    assert untagged(client, "RECENT") == [b"2"]
    assert untagged(client, "FLAGS")[0].startswith(b"(\\Answered")
    oks = b" ".join(untagged(client, "OK"))
    for code in (b"PERMANENTFLAGS", b"UIDVALIDITY", b"UIDNEXT 3", b"UNSEEN 1", b"HIGHESTMODSEQ"):
        assert code in oks
    assert b"READ-WRITE" in untagged(client, "READ-WRITE")[0] or True
    # \Recent goes to one session only
    other = server.client()
    other.select("INBOX")
    assert untagged(other, "RECENT") == [b"0"]
    typ, data = other.select("INBOX", readonly=True)
    assert typ == "OK"
    assert other.store("1", "+FLAGS", "(\\Seen)")[0] == "NO"  # read-only
    other.logout()


def test_append_with_flags_date_and_appenduid(client):
    typ, data = client.append("Drafts", "(\\Draft $Label1)", '"01-Feb-2026 08:30:00 +0800"', notice())
    assert typ == "OK"
    m = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert m and m.group(2) == b"1"
    client.select("Drafts")
    typ, data = client.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Draft" in data[0] and b"$Label1" in data[0]
    assert b'INTERNALDATE " 1-Feb-2026 00:30:00 +0000"' in data[0]  # the same instant, kept in UTC
    assert client.append("NoSuch", None, None, b"x")[0] == "NO"
    assert "TRYCREATE" in str(client.untagged_responses) or True


def test_fetch_items_sections_and_partial(server, client):
    raw = notice()
    deliver(server.ctx.store, raw, [server.users[0][1]])
    client.select("INBOX")
    typ, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[]<0.20> BODY.PEEK[2] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    flat = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in data)
    assert b"RFC822.SIZE %d" % len(raw) in flat
    assert raw[:20] in flat and b"BODY[]<0> {20}" in flat
    assert b"BODY[HEADER.FIELDS (SUBJECT)]" in flat and b"Subject: =?utf-8?" in flat
    assert b"\\Seen" not in flat
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]
    typ, data = client.fetch("1", "(BODYSTRUCTURE ENVELOPE)")
    flat = data[0][0] if isinstance(data[0], tuple) else data[0]
    text = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in data)
    assert b'"MIXED"' in text.upper() and b'"ALTERNATIVE"' in text.upper()
    assert CHINESE_FILENAME_2231 in text
    typ, data = client.fetch("1", "(RFC822.HEADER BODY.PEEK[1.1] BODY.PEEK[2.MIME] BODY.PEEK[TEXT]<5.10>)")
    text = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in data)
    header_end = raw.index(b"\r\n\r\n") + 4
    assert b"RFC822.HEADER {%d}" % header_end in text and raw[:header_end] in text
    assert b"BODY[1.1] {" in text and "您的驾驶证".encode() in text  # the text part, 8bit as sent
    assert b"BODY[2.MIME] {" in text and b"Content-Disposition: attachment" in text
    assert b"BODY[TEXT]<5> {10}" in text and raw[header_end + 5:header_end + 15] in text
    assert b"\\Seen" not in text
    typ, data = client.fetch("1", "(RFC822)")  # not PEEK: sets \Seen, and says so
    text = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in data)
    assert raw in text and b"\\Seen" in text
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    assert b"UID 1" in data[0] and b"\\Seen" in data[0]


def test_store_flags_and_silent(server, client):
    for i in range(3):
        deliver(server.ctx.store, notice(f"第{i}封"), [server.users[0][1]])
    client.select("INBOX")
    typ, data = client.store("1:2", "+FLAGS", "(\\Flagged $Important)")
    assert len(data) == 2 and b"\\Flagged" in data[0] and b"$Important" in data[1]
    typ, data = client.store("2", "-FLAGS.SILENT", "(\\Flagged)")
    assert data == [None]
    typ, data = client.uid("STORE", "3", "FLAGS", "(\\Answered)")
    assert b"UID 3" in data[0] and b"\\Answered" in data[0]
    typ, data = client.fetch("1:3", "(FLAGS)")
    assert [b"\\Flagged" in d for d in data] == [True, False, False]


def test_copy_and_move_with_copyuid(server, client):
    for i in range(3):
        deliver(server.ctx.store, notice(f"第{i}封"), [server.users[0][1]])
    client.select("INBOX")
    typ, data = client.copy("1:2", "Archive")
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    typ, data = client._simple_command("UID", "MOVE", "3", "Trash")
    assert typ == "OK"
    assert re.search(rb"COPYUID \d+ 3 1", b" ".join(untagged(client, "OK")))
    assert untagged(client, "EXPUNGE") == [b"3"]
    assert client.status("Trash", "(MESSAGES)")[1] == [b'"Trash" (MESSAGES 1)']
    assert client.copy("1", "Nowhere")[0] == "NO"
    typ, data = client.fetch("1:*", "(UID)")
    assert len(data) == 2


def test_search_every_kind_of_key_and_chinese(server, client):
    deliver(server.ctx.store, notice("驾驶证到期换证提醒", "请到车管所办理"), [server.users[0][1]])
    deliver(server.ctx.store, notice("医疗消费个人对账信息", "本次就诊费用 120.50 元", "shebao@hz.example.cn"),
            [server.users[0][1]])
    deliver(server.ctx.store, b"Subject: plain\r\nFrom: a@b.example\r\nX-Notice: fine\r\n\r\nhello world\r\n",
            [server.users[0][1]])
    client.select("INBOX")
    client.store("2", "+FLAGS", "(\\Seen)")
    client.literal = "驾驶证".encode()
    assert client.search("UTF-8", "SUBJECT")[1] == [b"1"]
    client.literal = "就诊".encode()
    assert client.search("UTF-8", "BODY")[1] == [b"2"]
    assert client.search(None, "FROM", "shebao")[1] == [b"2"]
    assert client.search(None, "SEEN")[1] == [b"2"]
    assert client.search(None, "UNSEEN")[1] == [b"1 3"]
    assert client.search(None, "OR", "SEEN", "SUBJECT", "plain")[1] == [b"2 3"]
    assert client.search(None, "NOT", "SEEN", "NOT", "3")[1] == [b"1"]
    assert client.search(None, "HEADER", "X-Notice", "fine")[1] == [b"3"]
    assert client.search(None, "TEXT", "hello")[1] == [b"3"]
    assert client.search(None, "LARGER", "200")[1] == [b"1 2"]
    assert client.search(None, "SENTON", "27-Nov-2026")[1] == [b"1 2"]
    assert client.search(None, "SINCE", "1-Jan-2020")[1] == [b"1 2 3"]
    assert client.search(None, "BEFORE", "1-Jan-2020")[1] == [b""]
    assert client.search(None, "2:*", "RECENT")[1] == [b"2 3"]
    assert client.uid("SEARCH", "UID", "2:3")[1] == [b"2 3"]
    typ, data = client.search("KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]


def test_expunge_and_uid_expunge(server, client):
    for i in range(4):
        deliver(server.ctx.store, notice(f"第{i}封"), [server.users[0][1]])
    client.select("INBOX")
    client.store("1:4", "+FLAGS", "(\\Deleted)")
    typ, data = client._simple_command("UID", "EXPUNGE", "2")
    assert typ == "OK" and untagged(client, "EXPUNGE") == [b"2"]
    typ, data = client.expunge()
    assert data == [b"3", b"2", b"1"]
    assert client.select("INBOX")[1] == [b"0"]


def test_close_expunges_silently_and_unselect_does_not(server, client):
    for i in range(2):
        deliver(server.ctx.store, notice(f"第{i}封"), [server.users[0][1]])
    client.select("INBOX")
    client.store("1", "+FLAGS", "(\\Deleted)")
    assert client._simple_command("UNSELECT")[0] == "OK"
    client.select("INBOX")
    assert client.close()[0] == "OK"
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)']


def test_quota_and_over_quota_append(tmp_path):
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "q", "accounts.quota_bytes=20000")
    prepare(cfg)
    running = start_server(cfg)
    try:
        c = running.client()
        typ, data = c.getquotaroot("INBOX")
        assert data[0] == [b'"INBOX" ""'] and data[1] == [b'"" (STORAGE 0 19)']
        assert c.append("INBOX", None, None, b"x" * 15000)[0] == "OK"
        typ, data = c.append("INBOX", None, None, b"y" * 15000)
        assert typ == "NO" and b"OVERQUOTA" in data[0]
        assert c.getquota('""')[1] == [b'"" (STORAGE 15 19)']
        c.logout()
    finally:
        running._stop()


def test_id_namespace_enable_check(client):
    typ, data = client.xatom("ID", '("name" "test")')
    assert untagged(client, "ID")[0].startswith(b'("name" "civicmail"')
    assert client.namespace()[1] == [b'(("" "/")) NIL NIL']
    client._simple_command("ENABLE", "CONDSTORE")
    assert "ENABLED" in client.untagged_responses
    client.select("INBOX")
    assert client.check()[0] == "OK"


def test_two_sessions_see_each_others_changes(server):
    a, b = server.client(), server.client()
    a.select("INBOX")
    b.select("INBOX")
    a.untagged_responses.clear()
    b.append("INBOX", None, None, notice())
    a.noop()
    assert untagged(a, "EXISTS") == [b"1"]
    b.noop()
    b.store("1", "+FLAGS", "(\\Flagged)")
    a.noop()
    fetches = untagged(a, "FETCH")
    assert any(b"\\Flagged" in f for f in fetches)
    b.store("1", "+FLAGS", "(\\Deleted)")
    b.expunge()
    # EXPUNGE must not be sent during FETCH: a non-UID FETCH gets no EXPUNGE, the next NOOP does
    a.fetch("1", "(FLAGS)")
    assert "EXPUNGE" not in a.untagged_responses
    a.noop()
    assert untagged(a, "EXPUNGE") == [b"1"]
    a.logout()
    b.logout()


def test_idle_is_told_of_new_mail(server, client):
    client.select("INBOX")
    tag = client._new_tag().decode()
    client.send(f"{tag} IDLE\r\n".encode())
    assert client.readline().startswith(b"+")
    deliver(server.ctx.store, notice(), [server.users[0][1]])
    client.sock.settimeout(5)
    assert client.readline() == b"* 1 EXISTS\r\n"
    assert client.readline() == b"* 1 RECENT\r\n"
    client.send(b"DONE\r\n")
    assert client.readline().startswith(f"{tag} OK".encode())


def test_connections_per_user_and_ip_are_limited(tmp_path):
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "lim", "imap.max_connections_per_user_ip=20")
    prepare(cfg)
    running = start_server(cfg)
    try:
        clients = [running.client() for _ in range(20)]
        with pytest.raises(imaplib.IMAP4.error, match="LIMIT"):
            running.client()
        clients.pop().logout()
        clients.append(running.client())
        for c in clients:
            c.logout()
    finally:
        running._stop()


def test_agency_clerk_logs_into_the_agency_mailbox_with_its_address(server):
    from mailserver.registry.agencies import add_agency

    add_agency(server.ctx.registry, "traffic-police", "交警支队", ["jiaojing@hz.example.cn"], password=PASSWORD)
    c = imaplib.IMAP4("127.0.0.1", server.port)
    assert c.login("jiaojing@hz.example.cn", PASSWORD)[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    c = imaplib.IMAP4("127.0.0.1", server.port)
    # The agency id logs in (for submission) but reaches the same mailbox over IMAP.
    assert c.login("traffic-police", PASSWORD)[0] == "OK"
    c.logout()


def test_failed_logins_are_throttled(tmp_path):
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "thr", "login.max_failures_per_account=3")
    prepare(cfg)
    running = start_server(cfg)
    try:
        c = running.client(login=False)
        for _ in range(3):
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                c.login(running.users[0][0], "wrong")
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            c.login(running.users[0][0], PASSWORD)  # refused unchecked while throttled
        assert c.login(running.users[1][0], PASSWORD)[0] == "OK"  # another account is not
        c.logout()
    finally:
        running._stop()


def test_idle_client_is_logged_out_after_the_timeout(tmp_path):
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "tmo", "imap.idle_timeout=1")
    prepare(cfg)
    running = start_server(cfg)
    try:
        raw = Raw(running.port)
        raw.sock.settimeout(30)
        assert raw.line().startswith(b"* BYE")  # nothing sent: logged out
        assert raw.line() == b""  # and the connection closed
        raw.close()
    finally:
        running._stop()


def test_append_to_the_selected_folder_is_recent_to_this_session_only(server, client):
    client.select("INBOX")
    client.untagged_responses.clear()
    client.append("INBOX", None, None, notice())
    client.noop()
    assert untagged(client, "EXISTS")[-1] == b"1" and untagged(client, "RECENT")[-1] == b"1"
    assert b"\\Recent" in client.fetch("1", "(FLAGS)")[1][0]
    other = server.client()
    other.select("INBOX")
    assert untagged(other, "RECENT") == [b"0"]
    other.logout()

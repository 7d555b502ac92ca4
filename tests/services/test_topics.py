"""Topics over the running server: subscribe by mail (SMTP submission), the confirmation read
over IMAP, a bulletin to every subscriber exactly once, RFC 8058 one-click over real HTTP."""
from __future__ import annotations

import email
import email.policy
import http.client
import re
import time
import urllib.parse

from sqlalchemy import select

from mailserver.registry.stats import city_figures
from mailserver.services import surveys
from mailserver.services.bulletins import publish
from mailserver.services.topics import add_topic, list_topics, one_click_path
from mailserver.store.addressing import resolve_local, split_detail
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, Subscription

from .conftest import DOMAIN, mail

BULLETIN = """# 关于调整公交线路的通知

自下月起，**12 路**公交车调整如下：

- 取消文三路站
- 新增[西溪湿地站](https://example.cn/bus/12)

详情请见市交通局网站。
"""


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def subscribers(server, topic: str) -> set[str]:
    with server.store.reader() as s:
        return set(s.scalars(select(Account.address).join(Subscription, Subscription.account_id == Account.id)
                             .where(Subscription.topic_id == topic)))


def test_resolve_local_exact_first_then_without_detail(server):
    add_topic(server.registry, "policy", "政策法规")
    with server.store.reader() as s:
        assert resolve_local(s, f"policy@{DOMAIN}").address == f"policy@{DOMAIN}"
        assert resolve_local(s, f"Policy+Subscribe@{DOMAIN}").address == f"policy@{DOMAIN}"
        assert resolve_local(s, f"nobody+subscribe@{DOMAIN}") is None
    assert split_detail("a+b+c@x.cn") == ("a@x.cn", "b+c")
    assert split_detail("+x@x.cn") == ("+x@x.cn", "")


def test_subscribe_by_mail_confirmation_over_imap_bulletin_once_and_one_click(server):
    reg = server.registry
    topic = add_topic(reg, "policy", "政策法规")
    alice, bob, carol = server.citizens
    server.settle()  # the worker learns the new address

    # alice subscribes over SMTP submission (subject word on the bare address); bob by the
    # +subscribe sub-address (stored as SMTP would once it resolves sub-addresses)
    server.send(alice, alice, topic.address, mail(alice, topic.address, "subscribe", "", "<sub-alice@test>"))
    raw = mail(bob, f"policy+subscribe@{DOMAIN}", "订阅", "")
    with server.store.reader() as s:
        topic_account = s.scalar(select(Account.id).where(Account.address == topic.address))
    deliver(server.store, f"X-Civicmail-Authenticated: citizen={bob}\r\n".encode() + raw, [topic_account])
    # a forged sender over port 25 (no trusted header): not subscribed, not answered
    server.send(None, carol, topic.address, mail(carol, topic.address, "subscribe", ""))
    done = server.wait_processed(3)
    assert done == {"subscribed": 2, "ignored-unverified": 1}
    assert subscribers(server, "policy") == {alice, bob}
    assert server.inbox(carol) == []

    # the confirmation, over IMAP, threaded under alice's request
    c = server.imap(alice)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        confirmation = parse(data[0][1])
    finally:
        c.logout()
    assert "已订阅" in confirmation["Subject"] and confirmation["In-Reply-To"] == "<sub-alice@test>"
    # that IMAP login makes alice an active user in the city's figures
    deadline = time.monotonic() + 30
    while city_figures(reg).active_users < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert city_figures(reg).active_users == 1
    assert "policy+unsubscribe@" in confirmation.get_body(("plain",)).get_content()

    # publish twice: each subscriber has it once
    first = publish(reg, "policy", BULLETIN)
    again = publish(reg, "policy", BULLETIN)
    assert (first.delivered, again.delivered, again.already) == (2, 0, 2)
    assert server.inbox(carol) == []
    bulletins = [parse(r) for r in server.inbox(bob) if b"List-Id" in r]
    assert len(bulletins) == 1
    b = bulletins[0]
    assert b["Subject"] == "关于调整公交线路的通知" and b["To"] == bob
    assert b["List-Id"] == f"政策法规 <policy.{DOMAIN}>"
    assert b["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = b.get_body(("plain",)).get_content()
    html = b.get_body(("html",)).get_content()
    assert "  • 新增西溪湿地站 <https://example.cn/bus/12>" in text and "12 路" in text
    # the footer follows the signature separator, dash dash space, so that clients fold it
    lines = text.splitlines()
    assert lines[lines.index("-- ") + 1].startswith("政策法规。退订") and "--" not in lines
    assert '<a href="https://example.cn/bus/12">西溪湿地站</a>' in html and "<strong>12 路</strong>" in html
    url = re.search(r"<(http://[^>]+)>", b["List-Unsubscribe"]).group(1)
    with server.store.reader() as s:
        bob_id = s.scalar(select(Account.id).where(Account.address == bob))
    assert url.endswith(one_click_path(reg, "policy", bob_id))

    # one-click: GET never unsubscribes; a forged token is refused; the real POST works, twice
    path = urllib.parse.urlsplit(url).path  # base_url says port 0 here: the CLI cannot know the bound port

    def page(method: str, target: str, body: bytes = b"") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        try:
            conn.request(method, target, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            conn.close()

    def request(method: str, target: str, body: bytes = b"") -> int:
        return page(method, target, body)[0]

    # the page a person opens from the link names the topic they would leave, and so does the answer
    status, confirm = page("GET", path)
    assert status == 200 and "退订“政策法规”？" in confirm and 'method="post"' in confirm
    assert bob in subscribers(server, "policy")
    forged = path.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAAAA"
    assert request("GET", forged) == 404  # a made-up link learns no topic
    assert request("POST", forged, b"List-Unsubscribe=One-Click") == 404
    assert request("POST", path, b"something=else") == 400
    assert bob in subscribers(server, "policy")
    status, done = page("POST", path, b"List-Unsubscribe=One-Click")
    assert status == 200 and "已退订“政策法规”" in done
    assert request("POST", path, b"List-Unsubscribe=One-Click") == 200
    assert subscribers(server, "policy") == {alice}
    assert request("GET", "/nothing/here") == 404
    assert [t.subscribers for t in list_topics(reg)] == [1]
    # a survey sent to the topic reaches its subscribers only
    surveys.add_survey(reg, {"id": "t1", "title": "t", "kind": "survey", "anonymous": True, "address": "survey-t1",
                             "questions": [surveys.Question("q", [("A", "a"), ("B", "b")])]})
    assert surveys.send_ballots(reg, "t1", to="policy") == 1
    assert any(b"survey-t1@" in r for r in server.inbox(alice)) and not any(b"survey-t1@" in r for r in server.inbox(bob))

    # unsubscribe by mail, with a confirmation
    server.send(alice, alice, topic.address, mail(alice, topic.address, "Unsubscribe", ""))
    assert server.wait_processed(4)["unsubscribed"] == 1
    assert subscribers(server, "policy") == set()
    assert "已退订" in parse(server.inbox(alice)[-1])["Subject"]


def test_statements_opt_out_bridges_the_pipelines_table(server):
    from mailserver.services.topics import setup_statements
    from mailserver.store.models import NoticeOptOut

    address = setup_statements(server.registry)
    alice = server.citizens[0]
    server.settle()
    server.send(alice, alice, address, mail(alice, address, "unsubscribe pension-statement", ""))
    server.send(alice, alice, address, mail(alice, address, "unsubscribe licence-renewal", ""))  # mandatory
    done = server.wait_processed(2)
    assert done == {"opted-out": 1, "help": 1}
    with server.store.reader() as s:
        assert list(s.scalars(select(NoticeOptOut.notice_type_id))) == ["pension-statement"]
    server.send(alice, alice, address, mail(alice, address, "subscribe pension-statement", ""))
    server.wait_processed(3)
    with server.store.reader() as s:
        assert list(s.scalars(select(NoticeOptOut.notice_type_id))) == []


def test_thunderbird_autoconfig_describes_the_configured_servers(server):
    """GET /mail/config-v1.1.xml (and its .well-known twin): Thunderbird's format, with the
    listeners of the configuration; anything but GET is refused."""
    import xml.etree.ElementTree as ET

    from mailserver.config import parse_hostport

    cfg = server.config
    for path in ("/mail/config-v1.1.xml?emailaddress=zhang.wei%40" + DOMAIN,
                 "/.well-known/autoconfig/mail/config-v1.1.xml"):
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            status, kind, body = response.status, response.getheader("Content-Type"), response.read()
        finally:
            conn.close()
        assert status == 200 and kind.startswith("application/xml")
        provider = ET.fromstring(body).find("emailProvider")
        assert provider.get("id") == DOMAIN and provider.findtext("domain") == DOMAIN
        got = [(e.tag, e.get("type"), e.findtext("hostname"), int(e.findtext("port")), e.findtext("socketType"),
                e.findtext("username")) for e in provider if e.tag.endswith("Server")]
        host = "localhost"  # development, listening on loopback: what clients reach (not server.hostname)
        want = [("incomingServer", "imap", host, parse_hostport(cfg.imaps.listen)[1], "SSL", "%EMAILADDRESS%"),
                ("incomingServer", "imap", host, parse_hostport(cfg.imap.listen)[1], "STARTTLS", "%EMAILADDRESS%"),
                ("outgoingServer", "smtp", host, parse_hostport(cfg.submissions.listen)[1], "SSL", "%EMAILADDRESS%"),
                ("outgoingServer", "smtp", host, parse_hostport(cfg.submission.listen)[1], "STARTTLS",
                 "%EMAILADDRESS%")]
        assert got == want
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", "/mail/config-v1.1.xml", body=b"x")
        assert conn.getresponse().status == 405
    finally:
        conn.close()

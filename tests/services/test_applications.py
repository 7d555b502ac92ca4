"""An application round trip: the citizen over SMTP submission, the agency reading over IMAP and
replying over SMTP submission, a status from the CLI; the thread intact end to end."""
from __future__ import annotations

import email
import email.policy
import re

from mailserver.services.applications import list_applications, reply, setup_desk

from .conftest import DOMAIN, mail

AGENCY_MAILBOX = f"traffic-police@{DOMAIN}"


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def ids(value) -> list[str]:
    return re.findall(r"<[^<>\s]+>", str(value or ""))


def test_application_round_trip_keeps_the_thread(server):
    reg = server.registry
    desk = setup_desk(reg, "traffic-police")
    assert desk == f"traffic-police-apply@{DOMAIN}"
    assert setup_desk(reg, "traffic-police") == desk  # idempotent
    server.settle()
    alice, bob, _ = server.citizens

    # the citizen applies; a header only the server may write is forged and must not survive
    request = mail(alice, desk, "机动车所有人变更联系地址申请", "新地址：杭州市西湖区文三路 100 号\n电话：13800000009",
                   "<app-1@client.test>", extra="X-Civicmail-Applicant: 假冒 <x@y>; id=000")
    server.send(alice, alice, desk, request)
    # unauthenticated mail to the desk is not an application
    server.send(None, bob, desk, mail(bob, desk, "申请", "forged", "<forged@test>"))
    assert server.wait_processed(2) == {"application": 1, "ignored-unverified": 1}
    [app] = list_applications(reg)
    assert app.applicant == alice and app.status == "received" and re.fullmatch(r"\d{4}-\d{6}", app.number)

    # the agency's clerk reads it over IMAP: verified identity, masked ID number, the number
    c = server.imap(AGENCY_MAILBOX)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        received = parse(data[0][1])
    finally:
        c.logout()
    applicant = received.get_all("X-Civicmail-Applicant")
    assert len(applicant) == 1 and "张伟" in str(applicant[0]) and alice in str(applicant[0])
    assert re.search(r"id=330\*{13}[0-9X]{2}", str(applicant[0]))
    assert received["X-Civicmail-Application"] == app.number
    assert received["Message-ID"] == "<app-1@client.test>" and received["Reply-To"] == desk
    assert "文三路 100 号" in received.get_body(("plain",)).get_content()

    # the citizen's acknowledgement carries the number, in the thread
    ack = parse(server.inbox(alice)[-1])
    assert app.number in str(ack["Subject"]) and ack["In-Reply-To"] == "<app-1@client.test>"
    assert app.number in ack.get_body(("plain",)).get_content()

    # the clerk answers with "Reply" (to the Reply-To, the desk), over SMTP submission as the agency
    answer = mail(AGENCY_MAILBOX, desk, "Re: 机动车所有人变更联系地址申请", "状态：受理中\n我们正在核实您的地址。",
                  "<clerk-1@agency.test>", extra="In-Reply-To: <app-1@client.test>\r\nReferences: <app-1@client.test>")
    server.send("traffic-police", AGENCY_MAILBOX, desk, answer)
    assert server.wait_processed(3)["status"] == 1
    relayed = parse(server.inbox(alice)[-1])
    assert relayed["Message-ID"] == "<clerk-1@agency.test>" and relayed["In-Reply-To"] == "<app-1@client.test>"
    assert relayed["X-Civicmail-Application"] == app.number and relayed["X-Civicmail-Status"] == "受理中"
    assert list_applications(reg)[0].status == "受理中"

    # the result, from the command line
    msgid = reply(reg, app.number, "approved", "您的联系地址已变更。")
    final = parse(server.inbox(alice)[-1])
    assert final["Message-ID"] == msgid and final["In-Reply-To"] == "<clerk-1@agency.test>"
    # the status in the thread's language; the header keeps the value the agency gave
    assert str(final["Subject"]).endswith(" — 已批准") and "approved" not in str(final["Subject"])
    assert final["X-Civicmail-Status"] == "approved"
    assert ids(final["References"])[0] == "<app-1@client.test>"
    assert set(ids(final["References"])) >= {"<app-1@client.test>", str(ack["Message-ID"]), "<clerk-1@agency.test>"}
    assert list_applications(reg)[0].status == "approved"
    assert any(b"approved" in r for r in server.inbox(AGENCY_MAILBOX, "Sent"))

    # the whole exchange, as alice's client sees it over IMAP: every message roots at her request
    c = server.imap(alice)
    try:
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])")
        assert typ == "OK"
        headers = [parse(part[1]) for part in data if isinstance(part, tuple)]
    finally:
        c.logout()
    assert len(headers) == 3
    for h in headers:
        assert "<app-1@client.test>" in ids(h["References"]) + ids(h["In-Reply-To"])


def test_someone_elses_number_starts_a_new_application(server):
    reg = server.registry
    desk = setup_desk(reg, "traffic-police")
    server.settle()
    alice, bob, _ = server.citizens
    server.send(alice, alice, desk, mail(alice, desk, "申请一", "x", "<a1@test>"))
    server.wait_processed(1)
    number = list_applications(reg)[0].number
    server.send(bob, bob, desk, mail(bob, desk, f"关于 {number}", "y", "<b1@test>"))
    server.send(alice, alice, desk, mail(alice, desk, f"补充材料 {number}", "z", "<a2@test>"))
    assert server.wait_processed(3) == {"application": 2, "application-follow-up": 1}
    apps = list_applications(reg)
    assert [a.applicant for a in apps] == [alice, bob]
    assert len(server.inbox(AGENCY_MAILBOX)) == 3
    assert len(server.inbox(alice)) == 1  # one acknowledgement: the follow-up is not a new application

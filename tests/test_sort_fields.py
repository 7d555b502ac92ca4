"""What SORT and THREAD read is stored with every message: computed at delivery by every writer
(SMTP, APPEND, the pipeline's structure, a message stored without one), and filled by migration
0009 for messages stored before it, in batches, on both engines."""
from __future__ import annotations

import datetime as dt
import functools
import re
import smtplib
import threading

from sqlalchemy import inspect, text

from mailserver.identity import idnumber
from mailserver.mime import analyze, sort_fields_of
from mailserver.mime.sortkeys import COLUMNS, SortFields
from mailserver.registry.citizens import add_citizen
from mailserver.store import bodies, migrate
from mailserver.store.mailstore import NewMessage, insert_messages
from tests.abuse import assert_responsive_while, city, city_factory  # noqa: F401  (fixtures)
from tests.imap.test_search_hardening import account_id_of


def _stored(store) -> list[tuple[bytes, SortFields]]:
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT c.raw, c.blob_key, {', '.join('s.' + c for c in COLUMNS)} FROM content c "
                                 "JOIN content_sort s ON s.content_id = c.id ORDER BY c.id")).all()
    return [(bodies.body(store, r[0], r[1]), SortFields(*(bool(v) if c == "sort_reply" and v is not None else v
                                                          for c, v in zip(COLUMNS, r[2:])))) for r in rows]


def _raw(n: int) -> bytes:
    return (f"From: =?utf-8?b?5byg5Lyf?= <clerk{n % 7}@gov.example>\r\nTo: citizen{n}@hz.example.cn\r\n"
            f"Subject: Re: [通知] 第{n}号 (fwd)\r\nDate: Sat, 01 Feb 2020 10:{n % 60:02d}:00 +0800\r\n"
            f"Message-ID: <m{n}@gov.example>\r\nReferences: <m{n - 1}@gov.example> <m{n - 2}@gov.example>\r\n"
            f"\r\nbody {n}\r\n").encode()


def test_migration_fills_every_existing_message_in_batches(registry, store):
    made = add_citizen(registry, "李娜", idnumber.make("330106", dt.date(1990, 5, 6), 7), password="pw long enough")
    account = account_id_of(store, made.address)
    store.blobs = None  # bodies in the database: the downgrade below 0017 needs them there
    with store.session() as s:  # 1,100 content rows: two batches of the backfill
        insert_messages(s, [NewMessage(account, _raw(n)) for n in range(1100)])
    before = _stored(store)
    assert len(before) == 1100 and all(f.subject for _, f in before)
    store.engine.dispose()
    migrate.downgrade(store, "0007")  # the table goes ...
    with store.engine.connect() as conn:
        assert "content_sort" not in inspect(conn).get_table_names()
    migrate.upgrade(store)  # ... and comes back filled from each message's header
    after = _stored(store)
    assert after == before
    raw, fields = after[5]
    assert fields == sort_fields_of(raw) == analyze(raw).sort
    assert fields == SortFields("第5号", True, 1580522700, "CLERK5", "CITIZEN5", "", "张伟", "CITIZEN5@HZ.EXAMPLE.CN",
                                "m5@gov.example", "m4@gov.example m3@gov.example")


def test_every_writer_stores_the_fields(city):  # noqa: F811
    store = city.server.ctx.store
    with smtplib.SMTP("127.0.0.1", city.smtp_port, timeout=30) as smtp:  # SMTP, through the committer
        smtp.sendmail("clerk@gov.example", [city.addresses[1]],
                      f"From: Clerk <clerk@gov.example>\r\nTo: {city.addresses[1]}\r\nSubject: Fwd: by smtp\r\n"
                      "Message-ID: <smtp@gov.example>\r\n\r\nhello\r\n")
    c = city.imap(1)  # APPEND
    assert c.append("INBOX", None, None, b"From: me@hz.example.cn\r\nSubject: [draft] by append\r\n\r\nx\r\n")[0] == "OK"
    c.logout()
    with store.session() as s:  # a writer that brings no analysed structure at all
        insert_messages(s, [NewMessage(account_id_of(store, city.addresses[2]), b"Subject: Re: bare\r\n\r\nx\r\n")])
    stored = {f.subject: f for _, f in _stored(store)}
    assert stored["BY SMTP"].reply and stored["BY SMTP"].display_from == "CLERK"
    assert stored["BY SMTP"].message_id == "smtp@gov.example"
    assert stored["BY APPEND"].from_ == "ME" and not stored["BY APPEND"].reply
    assert stored["BARE"].reply and stored["BARE"].date is None


def test_many_sorting_and_threading_connections_leave_others_served(city):  # noqa: F811
    store = city.server.ctx.store
    account = account_id_of(store, city.addresses[0])
    with store.session() as s:
        insert_messages(s, [NewMessage(account, _raw(n)) for n in range(3000)])
    answers: list[int] = []

    def sort_forever(n: int, stop: threading.Event) -> None:
        c = city.imap(0)
        c.select("INBOX", readonly=True)
        while not stop.is_set():
            if n % 2:
                typ, data = c.sort("(REVERSE DATE SUBJECT)", "UTF-8", "ALL")
                answers.append(len(data[0].split()))
            else:
                typ, data = c.thread("REFERENCES", "UTF-8", "ALL")
                answers.append(len(re.findall(rb"\d+", data[0])))
            assert typ == "OK"
        c.logout()

    assert_responsive_while(city, *(functools.partial(sort_forever, n) for n in range(12)), warmup=1.0)
    assert answers and set(answers) == {3000}

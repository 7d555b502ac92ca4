"""SEARCH bounded (issue 11, items 3 and 4): a deeply nested SEARCH is answered BAD [LIMIT] and
the session goes on (it died of an uncaught RecursionError); many searching connections of one
citizen leave other citizens' logins and deliveries unhurried."""
from __future__ import annotations

import datetime as dt
import email.utils
import smtplib
import socket
import threading
import time

import pytest

from mailserver.imap.commands import Invalid, Search
from mailserver.imap.parser import parse_command
from tests.abuse import (PASSWORD, WITHIN, assert_responsive, assert_responsive_while, city,  # noqa: F401
                         city_factory)  # noqa: F401  (fixtures)

DEEP = 3000


def _chain(head: str, tail: str, n: int = DEEP) -> str:
    return head * n + tail


@pytest.mark.parametrize("text, reply", [
    (_chain("NOT ", "ALL"), b"BAD [LIMIT] parentheses, NOT and OR nested too deeply"),
    (_chain("(", "ALL") + ")" * DEEP, b"BAD [LIMIT] parentheses, NOT and OR nested too deeply"),
    (_chain("OR SUBJECT x ", "ALL"), b"BAD [LIMIT] parentheses, NOT and OR nested too deeply"),
    (_chain("OR ", "ALL" + " ALL" * DEEP), b"BAD [LIMIT] parentheses, NOT and OR nested too deeply"),
    (" ".join(["SEEN"] * 300), b"BAD [LIMIT] too many search keys"),
])
def test_deep_or_large_search_is_bad_and_the_session_goes_on(server, text, reply, caplog):
    caplog.set_level("INFO", "civicmail.imap")
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    assert raw.command("a", f"SEARCH {text}")[-1] == b"a " + reply + b"\r\n"
    assert raw.command("b", f"UID SEARCH {text}")[-1] == b"b " + reply + b"\r\n"
    assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    raw.close()
    limit = "toomanykeys" if b"keys" in reply else "toodeep"
    assert sum(f"imap limit={limit} client=127.0.0.1 account={server.users[0][1]}" in r.getMessage()
               for r in caplog.records) == 2


#: the nested SEARCHes above at the longest line a logged-in client may send (imap.max_line_length,
#: 64 KiB): each is BAD [LIMIT], but reading one to its end into tokens took 50 to 150 ms of the
#: event loop, so eight connections sending them back to back held a new SMTP greeting for 2 s
LONG_DEEP = [b"NOT " * 16000 + b"ALL", b"OR SUBJECT x " * 5000 + b"ALL", b"SEEN " * 13000]


def test_long_deep_searches_leave_the_loop_free(city):  # noqa: F811
    def abuse(stop: threading.Event) -> None:
        with socket.create_connection(("127.0.0.1", city.imap_port), timeout=30) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(f'l LOGIN "{city.addresses[0]}" "{PASSWORD}"\r\ns SELECT INBOX\r\n'.encode())
            while not f.readline().startswith(b"s "):
                pass
            while not stop.is_set():
                sock.sendall(b"".join(b"a SEARCH " + text + b"\r\n" for text in LONG_DEEP))
                for _ in LONG_DEEP:
                    line = f.readline()
                    assert line.startswith(b"a BAD [LIMIT]"), line[:80]

    assert_responsive_while(city, *[abuse] * 8, warmup=1.0, join=60)


def test_searches_up_to_the_limits_are_answered(server):
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    for text in (_chain("NOT ", "ALL", 63), _chain("(", "ALL", 63) + ")" * 63, _chain("OR SEEN ", "ALL", 63),
                 " ".join(["UNSEEN"] * 256),
                 # longer than session._PARSE_IN_THREAD: parsed on the heavy lane, answered the same
                 " ".join(["UNSEEN"] * 200) + ' NOT HEADER Subject "' + "x" * 4000 + '"'):
        assert raw.command("a", f"SEARCH {text}")[-1].startswith(b"a OK"), text[:40]
    raw.close()


def test_deep_lists_in_any_command_are_bad_limit():
    """The tokenizer bounds every parenthesised list, so no reader of one recurses without bound."""
    for line in (b"a FETCH 1 " + b"(" * DEEP + b"FLAGS" + b")" * DEEP,
                 b"a STORE 1 FLAGS " + b"(" * DEEP + b"\\Seen" + b")" * DEEP,
                 b"a APPEND INBOX " + b"(" * DEEP + b")" * DEEP + b" {1+}\r\nx"):
        assert parse_command(line + b"\r\n") == Invalid("a", "TOODEEP")


def test_parser_limits_follow_the_configuration():
    from mailserver.config import IMAPConfig

    tight = IMAPConfig(max_search_depth=3, max_search_keys=4)
    assert isinstance(parse_command(b"a SEARCH NOT NOT ALL\r\n", tight), Search)
    assert parse_command(b"a SEARCH NOT NOT NOT ALL\r\n", tight) == Invalid("a", "TOODEEP")
    assert isinstance(parse_command(b"a SEARCH SEEN SEEN SEEN SEEN\r\n", tight), Search)
    assert parse_command(b"a SEARCH SEEN SEEN SEEN SEEN SEEN\r\n", tight) == Invalid("a", "TOOMANYKEYS")


# -- many searching connections (item 3) ----------------------------------------------------------

DAYS = 2557  # one message a day for seven years, as in the issue
FIRST = dt.date(2019, 1, 1)
#: the issue's SEARCH: eight ORs of SENTBEFORE, each of which read the Date header again per message
ORS = "".join(f"OR SENTBEFORE {d.day}-{d.strftime('%b')}-{d.year} " for d in (
    dt.date(2019, 3, 1), dt.date(2019, 6, 1), dt.date(2019, 9, 1), dt.date(2020, 1, 1), dt.date(2020, 6, 1),
    dt.date(2021, 1, 1), dt.date(2022, 1, 1), dt.date(2023, 1, 1))) + "SENTON 1-Jan-2025"
#: a search that stays costly however it is evaluated: 40 keys, each reading every message's text
COSTLY = " ".join(["NOT TEXT zqxj"] * 20)


def account_id_of(store, address: str) -> int:
    from sqlalchemy import select

    from mailserver.store.models import Account

    with store.reader() as s:
        return s.scalar(select(Account.id).where(Account.address == address))


def _fill_inbox(store, address: str, days: int = DAYS) -> None:
    """One message a day from FIRST, each with its own Date and Message-ID <d{n}@gov.example>."""
    from mailserver.store.mailstore import NewMessage, insert_messages

    account_id = account_id_of(store, address)
    messages = []
    for n in range(days):
        day = FIRST + dt.timedelta(days=n)
        sent = email.utils.format_datetime(dt.datetime(day.year, day.month, day.day, 9, tzinfo=dt.timezone.utc))
        raw = (f"Date: {sent}"
               f"\r\nFrom: tax@gov.example\r\nTo: {address}\r\nSubject: notice {n}\r\nMessage-ID: <d{n}@gov.example>"
               "\r\n\r\n" + "body line\r\n" * 30).encode()
        messages.append(NewMessage(account_id, raw))
    with store.session() as s:
        insert_messages(s, messages)


@pytest.mark.parametrize("criteria, expected", [
    (ORS, (dt.date(2023, 1, 1) - FIRST).days + 1),  # every day before 2023, and 1 January 2025
    (COSTLY, DAYS),
], ids=["sentbefore-ors", "costly"])
def test_many_searching_connections_leave_logins_and_deliveries_alone(city, criteria, expected):  # noqa: F811
    _fill_inbox(city.server.ctx.store, city.addresses[0])
    stop = threading.Event()
    found: list[int] = []
    errors: list[BaseException] = []

    def search_forever() -> None:
        try:
            c = city.imap(0)
            c.select("INBOX", readonly=True)
            while not stop.is_set():
                typ, data = c.search(None, criteria)
                assert typ == "OK"
                found.append(len(data[0].split()))
            c.logout()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=search_forever, daemon=True) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)  # sixteen searches queued (on main: every store thread taken)
        assert_responsive(city)
        start = time.monotonic()
        with smtplib.SMTP("127.0.0.1", city.smtp_port, timeout=30) as smtp:
            smtp.sendmail("clerk@gov.example", [city.addresses[1]],
                          f"From: clerk@gov.example\r\nTo: {city.addresses[1]}\r\nSubject: hi\r\n\r\nhello\r\n")
        delivered = time.monotonic() - start
        assert delivered < WITHIN, f"an SMTP delivery took {delivered:.2f} s under abuse"
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert not errors, errors[:1]
    assert found and set(found) == {expected}


def test_search_reads_the_header_alone_once_per_message_on_both_engines(registry, store):
    """The ``header`` column is the raw header (SQLite BLOB and PostgreSQL bytea alike), and the
    keys of one command share one parse of it."""
    from mailserver.imap.search import Matcher, Message, columns_for
    from mailserver.registry.citizens import add_citizen
    from mailserver.identity import idnumber
    from mailserver.store import mailboxes as mb

    made = add_citizen(registry, "李娜", idnumber.make("330106", dt.date(1990, 5, 6), 7), password="pw long enough")
    _fill_inbox(store, made.address, days=3)
    keys = parse_command(b'a SEARCH OR SENTON 2-Jan-2019 HEADER Message-ID d2@ NOT HEADER X-None ""\r\n').criteria
    assert columns_for(keys) >= {"header"} and "raw" not in columns_for(keys)
    folder_account = account_id_of(store, made.address)
    folder = next(f for f in mb.list_folders(store, folder_account) if f.name == "INBOX")
    rows = mb.fetch_rows(store, folder_account, folder.id, 1, 3, 10, tuple(sorted(columns_for(keys))))
    assert [r.header.endswith(b"\r\n\r\n") and b"body line" not in r.header for r in rows] == [True] * 3
    matcher = Matcher(3, 3, lambda uid: False)
    messages = [Message(r) for r in rows]
    assert [all(matcher.match(k, m, n + 1) for k in keys) for n, m in enumerate(messages)] == [False, True, True]
    header = messages[1].header
    assert messages[1].header is header and header.sent_date == dt.date(2019, 1, 2)  # parsed once, kept

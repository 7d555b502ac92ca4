"""SORT (RFC 5256, every key), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267) and THREAD
(ORDEREDSUBJECT, REFERENCES) over real sockets: imaplib's ``sort`` and ``thread`` and raw lines,
on folders whose expected order is worked out by hand from the RFCs' rules. The base subject and
the i;unicode-casemap collation are also held to tables of the RFCs' own rules."""
from __future__ import annotations

import email.utils
import imaplib
import re
import time

import pytest

from mailserver.imap.thread import ThreadMessage, ordered_subject, references
from mailserver.mime.collation import casemap
from mailserver.mime.sortkeys import base_subject
from mailserver.store.mailstore import deliver


def mail(subject: str | None, date: str | None = None, frm: str = "a@x.example", to: str = "b@y.example",
         cc: str | None = None, msgid: str | None = None, refs: str | None = None, irt: str | None = None,
         body: str = "body\r\n") -> bytes:
    head = [f"From: {frm}", f"To: {to}"]
    for name, value in (("Cc", cc), ("Subject", subject), ("Date", date), ("Message-ID", msgid),
                        ("References", refs), ("In-Reply-To", irt)):
        if value is not None:
            head.append(f"{name}: {value}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("utf-8")


def day(n: int, hour: int = 9, minute: int = 0) -> str:
    return f"{n:02d} Jan 2020 {hour:02d}:{minute:02d}:00 +0000"


def sort(client: imaplib.IMAP4, criteria: str, *search: str, charset: str = "UTF-8") -> list[int]:
    typ, data = client.sort(criteria, charset, *(search or ("ALL",)))
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


def thread(client: imaplib.IMAP4, algorithm: str, *search: str, uid: bool = False) -> bytes:
    if uid:
        typ, data = client.uid("THREAD", algorithm, "UTF-8", *(search or ("ALL",)))
    else:
        typ, data = client.thread(algorithm, "UTF-8", *(search or ("ALL",)))
    assert typ == "OK", data
    return data[0] or b""


# -- the base subject (RFC 5256 2.1) and the collation (RFC 5051), as tables ----------------------

@pytest.mark.parametrize("subject, base, reply", [
    ("hello", "HELLO", False),
    ("Re: hello", "HELLO", True),
    ("RE: hello", "HELLO", True),
    ("re:hello", "HELLO", True),
    ("Fw: hello", "HELLO", True),
    ("Fwd: hello", "HELLO", True),
    ("FWD : hello", "HELLO", True),  # subj-refwd allows blanks before the colon
    ("Re [list]: hello", "HELLO", True),  # and one blob
    ("Re: Fwd: [x] Re: hello", "HELLO", True),  # nested leaders, a blob before the last one
    ("[list] hello", "HELLO", False),  # a leading blob goes when something is left
    ("[list]", "[LIST]", False),  # ...and stays when it is all there is
    ("[a][b]", "[B]", False),  # the last blob is the base subject if nothing else is
    ("[a] [b] hello", "HELLO", False),
    ("hello (fwd)", "HELLO", True),  # subj-trailer
    ("hello (FWD) (fwd)  ", "HELLO", True),
    ("[fwd: hello]", "HELLO", True),  # subj-fwd-hdr ... subj-fwd-trl
    ("[Fwd: Re: [list] hello (fwd)]", "HELLO", True),  # removed, then (2) to (5) again
    ("Re: [fwd: [a] b] (fwd)", "B", True),
    ("  hello \t  world  ", "HELLO WORLD", False),  # blanks and tabs: one space, none around
    ("Re:", "", True),
    ("Re re: hello", "RE RE: HELLO", False),  # "re" then blanks then "re:" is no subj-refwd
    ("Ref: hello", "REF: HELLO", False),
    ("Re: 关于办理居住证的通知", "关于办理居住证的通知", True),
    ("回复：会议", "回复:会议", False),  # a Chinese "reply" is no RFC 5256 marker
    ("Ｒｅ： 会议", "会议", True),  # fullwidth letters and colon decompose to ASCII (NFKD)
])
def test_base_subject_follows_rfc_5256_rules(subject, base, reply):
    assert base_subject(subject) == (base, reply)


@pytest.mark.parametrize("text, key", [
    ("abc", "ABC"),
    ("Straße", "STRAßE"),  # ß has no simple titlecase mapping
    ("ﬀ", "FF"),  # compatibility decomposition, titlecased again
    ("ＡＢＣ", "ABC"),  # fullwidth
    ("é", "E\u0301"),  # decomposed
    ("ǆ", "D" + "Z\u030c"),  # titlecase ǅ, then decomposed
    ("张伟", "张伟"),  # CJK maps to itself
    ("\uf900", "\u8c48"),  # a CJK compatibility ideograph: its unified form
])
def test_unicode_casemap_keys(text, key):
    assert casemap(text) == key
    assert casemap(key) == key  # a key's key is itself


# -- SORT over a folder ---------------------------------------------------------------------------

FOLDER = [  # (message, INTERNALDATE); sequence numbers 1..4 in this order
    (mail("Re: banana", day(3), frm="Zed <zed@x.example>", to="bob@y.example", cc="carol@z.example"),
     "05-Jan-2021 10:00:00 +0000"),
    (mail("apple", day(1), frm="=?utf-8?b?5byg5Lyf?= <zhang@x.example>", to="alice@y.example",
          body="long body\r\n" * 200), "01-Jan-2021 10:00:00 +0000"),
    (mail("[tag] Cherry", day(2), frm="amy@x.example", to="Dan <dan@y.example>", cc="bob@z.example",
          body="body\r\n" * 20), "03-Jan-2021 10:00:00 +0000"),
    (mail("Fwd: apple", None, frm="Bob <Bob@x.example>", to="carl@y.example", body="body\r\n" * 40),
     "02-Jan-2021 10:00:00 +0000"),  # no Date: it sorts by its arrival
]


@pytest.fixture
def sorted_folder(client):
    for raw, when in FOLDER:
        typ, _ = client.append("INBOX", None, f'"{when}"', raw)
        assert typ == "OK"
    client.select("INBOX")
    return client


EVERY_KEY = [
    ("(ARRIVAL)", [2, 4, 3, 1]),
    ("(DATE)", [2, 3, 1, 4]),  # 4 has no Date: its INTERNALDATE (2021) is its sent date
    ("(SUBJECT)", [2, 4, 1, 3]),  # APPLE APPLE BANANA CHERRY; equal keys by sequence number
    ("(REVERSE SUBJECT)", [3, 1, 2, 4]),  # REVERSE leaves the sequence-number tie-break ascending
    ("(FROM)", [3, 4, 1, 2]),  # addr-mailbox: amy, Bob, zed, zhang (case-insensitive)
    ("(TO)", [2, 1, 4, 3]),  # alice, bob, carl, dan
    ("(CC)", [2, 4, 3, 1]),  # none, none, bob, carol: an absent Cc is the empty string
    ("(SIZE)", [1, 3, 4, 2]),
    ("(REVERSE SIZE)", [2, 4, 3, 1]),
    ("(DISPLAYFROM)", [3, 4, 1, 2]),  # amy@x.example, Bob, Zed, 张伟 (decoded display name)
    ("(DISPLAYTO)", [2, 1, 4, 3]),  # alice@y.example, bob@y.example, carl@y.example, Dan
    ("(SUBJECT REVERSE DATE)", [4, 2, 1, 3]),  # the APPLEs newest first, then BANANA, CHERRY
    ("(REVERSE ARRIVAL SIZE)", [1, 3, 4, 2]),
]


def test_sort_by_every_key(sorted_folder):
    """One session, every key of the table (one server for all: they only read)."""
    for criteria, expected in EVERY_KEY:
        assert sort(sorted_folder, criteria) == expected, criteria


def test_uid_sort_answers_uids_and_sizes_are_the_stored_ones(sorted_folder):
    typ, data = sorted_folder.uid("SORT", "(REVERSE DATE)", "UTF-8", "ALL")
    assert typ == "OK"
    uids = [int(u) for u in data[0].split()]
    typ, fetched = sorted_folder.fetch("1:4", "(UID RFC822.SIZE)")
    by_seq = {int(f.split()[0]): f for f in fetched}
    uid_of = {seq: int(by_seq[seq].split(b"UID ")[1].split()[0]) for seq in by_seq}
    assert uids == [uid_of[s] for s in (4, 1, 3, 2)]
    sizes = {seq: int(by_seq[seq].split(b"RFC822.SIZE ")[1].rstrip(b")")) for seq in by_seq}
    assert sorted(sizes, key=lambda s: (sizes[s], s)) == [1, 3, 4, 2]


def test_search_criteria_combined_with_sort(sorted_folder):
    c = sorted_folder
    assert sort(c, "(DATE)", "FROM", "amy") == [3]
    assert sort(c, "(SUBJECT)", "NOT", "SUBJECT", "cherry") == [2, 4, 1]
    assert sort(c, "(REVERSE DATE)", "SENTSINCE", "2-Jan-2020") == [1, 3]  # 4 has no Date field to match
    assert sort(c, "(SIZE)", "OR", "TO", "dan", "CC", "carol") == [1, 3]
    assert sort(c, "(DATE)", "2:3") == [2, 3]
    c.store("1", "+FLAGS", "\\Seen")
    assert sort(c, "(SUBJECT)", "UNSEEN") == [2, 4, 3]
    assert sort(c, "(SUBJECT)", "SUBJECT", '"nothing like it"') == []


def test_charsets_utf8_and_us_ascii_are_accepted_and_others_are_badcharset(sorted_folder):
    c = sorted_folder
    assert sort(c, "(ARRIVAL)", charset="US-ASCII") == [2, 4, 3, 1]
    assert sort(c, "(ARRIVAL)", charset="utf-8") == [2, 4, 3, 1]
    for command in ("SORT (DATE) KOI8-R ALL", "UID SORT (DATE) ISO-2022-JP ALL", "THREAD REFERENCES BIG5 ALL"):
        typ, data = c._simple_command(*command.split(" ", 1))
        assert typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]"), (command, data)
    assert sort(c, "(DATE)") == [2, 3, 1, 4]  # the session goes on


def test_bad_sort_and_thread_commands_are_bad_and_the_session_goes_on(server, sorted_folder):
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    for text in ("SORT DATE UTF-8 ALL", "SORT () UTF-8 ALL", "SORT (REVERSE) UTF-8 ALL", "SORT (NAME) UTF-8 ALL",
                 "SORT (DATE) UTF-8", "SORT (DATE)", "SORT RETURN (FIRST) (DATE) UTF-8 ALL",
                 "THREAD UTF-8 ALL", "THREAD NOSUCH UTF-8 ALL", "UID THREAD REFERENCES UTF-8 BADKEY",
                 "SORT (DATE REVERSE) UTF-8 ALL"):
        assert raw.command("b", text)[-1].startswith(b"b BAD"), text
    assert raw.command("n", "SORT (DATE) UTF-8 ALL")[-2:] == [b"* SORT 2 3 1 4\r\n", b"n OK completed\r\n"]
    raw.close()
    fresh = server.raw()  # authenticated, nothing selected: not allowed
    assert fresh.command("x", "SORT (DATE) UTF-8 ALL")[-1].startswith(b"x BAD")
    assert fresh.command("y", "THREAD REFERENCES UTF-8 ALL")[-1].startswith(b"y BAD")
    fresh.close()


def test_esort_return_options(server, sorted_folder):
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    uids = raw.command("u", "UID SORT (REVERSE DATE) UTF-8 ALL")[0].split()[2:]
    assert len(uids) == 4
    lines = raw.command("a", "UID SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL")
    # MIN and MAX are the first and the last in sort order; ALL keeps the sort order
    want = (f'* ESEARCH (TAG "a") UID MIN {int(uids[0])} MAX {int(uids[-1])} COUNT 4 ALL '
            f'{",".join(u.decode() for u in uids)}\r\n').encode()
    assert lines == [want, b"a OK completed\r\n"]
    assert raw.command("b", "SORT RETURN () (SUBJECT) UTF-8 ALL") == [
        b'* ESEARCH (TAG "b") ALL 2,4,1,3\r\n', b"b OK completed\r\n"]
    assert raw.command("c", "SORT RETURN (COUNT MIN) (DATE) UTF-8 FROM amy") == [
        b'* ESEARCH (TAG "c") MIN 3 COUNT 1\r\n', b"c OK completed\r\n"]
    assert raw.command("d", "SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 SUBJECT nowhere") == [
        b'* ESEARCH (TAG "d") COUNT 0\r\n', b"d OK completed\r\n"]
    # ascending runs in sort order are ranges
    assert raw.command("e", "SORT RETURN (ALL) (SIZE) UTF-8 ALL") == [
        b'* ESEARCH (TAG "e") ALL 1,3:4,2\r\n', b"e OK completed\r\n"]
    # a MODSEQ key (RFC 7162 3.1.5): the highest MODSEQ of the messages answered; being the first
    # CONDSTORE-enabling command while selected, it is preceded by the folder's HIGHESTMODSEQ (3.1)
    enabled, answer = raw.command("m", "SORT (SIZE) UTF-8 MODSEQ 1")[:2]
    assert enabled.startswith(b"* OK [HIGHESTMODSEQ "), enabled
    assert re.fullmatch(rb"\* SORT 1 3 4 2 \(MODSEQ \d+\)\r\n", answer), answer
    raw.close()


def test_capabilities_name_sort_thread_esort_and_both_contexts(client):
    typ, data = client.capability()
    caps = data[0].split()
    for cap in (b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"):
        assert cap in caps
    assert sorted(c for c in caps if c.startswith(b"CONTEXT=")) == [b"CONTEXT=SEARCH", b"CONTEXT=SORT"]


# -- Chinese subjects and names -------------------------------------------------------------------

def _b64(text: str, charset: str = "utf-8") -> str:
    import base64

    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


CHINESE = [  # subject, From
    ("王五的缴费通知", f"{_b64('王五')} <wang@gov.example>"),
    ("Banana", "Zhao <zhao@gov.example>"),
    (_b64("张三的缴费通知", "gb18030"), f"{_b64('张三', 'gb18030')} <zhang@gov.example>"),
    ("apple", "alice <alice@gov.example>"),
    ("Re: 李四的缴费通知", f"{_b64('李四')} <li@gov.example>"),
    ("Ｃherry", "\"Ｃarl\" <carl@gov.example>"),
    ("赵六的缴费通知", f"{_b64('赵六')} <zhaoliu@gov.example>"),
]


def test_chinese_subjects_and_names_sort_by_unicode_casemap(server, client):
    for n, (subject, frm) in enumerate(CHINESE):
        deliver(server.ctx.store, mail(subject, day(n + 1), frm=frm), [server.users[0][1]])
    client.select("INBOX")
    # APPLE, BANANA, CHERRY (the fullwidth Ｃ decomposes to C, case folds), then the ideographs
    # by code point: 张 U+5F20, 李 U+674E, 王 U+738B, 赵 U+8D75 (GB18030-encoded subject decoded)
    assert sort(client, "(SUBJECT)") == [4, 2, 6, 3, 5, 1, 7]
    assert sort(client, "(REVERSE SUBJECT)") == [7, 1, 5, 3, 6, 2, 4]
    # display names: ALICE, CARL, ZHAO, then 张三 李四 王五 赵六
    assert sort(client, "(DISPLAYFROM)") == [4, 6, 2, 3, 5, 1, 7]
    # a search in Chinese with the sort
    typ, data = client._simple_command("SORT", "(REVERSE DATE)", "UTF-8", "SUBJECT", "{6+}\r\n缴费".encode())
    assert typ == "OK"
    assert [int(n) for n in client.untagged_responses.pop("SORT")[0].split()] == [7, 5, 3, 1]


# -- THREAD -----------------------------------------------------------------------------------------

def _hour(n: int, minute: int = 0) -> str:
    return f"01 Feb 2020 {n:02d}:{minute:02d}:00 +0000"


THREADED = [  # sequence numbers 1..12 in this order
    mail("meeting", _hour(1), msgid="<a@x>"),
    mail("Re: meeting", _hour(2), msgid="<b@x>", refs="<a@x>"),
    mail("budget", _hour(3), msgid="<c@x>", refs="<missing-x@x>"),  # a parent never seen: a dummy
    mail("Re: budget", _hour(4), msgid="<d@x>", irt="<missing-x@x>"),  # In-Reply-To alone links too
    mail("Re: meeting", _hour(1, 30), msgid="<e@x>"),  # no references: merged by its subject
    mail("Re: meeting", _hour(6), msgid="<f@x>", refs="<a@x> <b@x>"),
    mail("lonely", _hour(7), msgid="<g@x>", refs="<missing-y@x>"),  # a dummy with one child: promoted
    mail("budget", _hour(8), msgid="<h@x>"),  # same subject as the dummy's thread: joins the dummy
    mail("report", _hour(9), msgid="<i@x>"),
    mail("report", _hour(10), msgid="<j@x>"),  # neither a reply: both under a new dummy
    mail("dup", _hour(11), msgid="<a@x>"),  # a duplicate Message-ID is made unique
    mail("Re: meeting", _hour(12), msgid="<k@x>", refs="<a@x> <missing-z@x>"),  # a dummy between: promoted
]


@pytest.fixture
def threaded(server, client):
    for raw in THREADED:
        deliver(server.ctx.store, raw, [server.users[0][1]])
    client.select("INBOX")
    return client


def test_thread_references_with_dummies_subject_merge_and_sibling_sort(threaded):
    # 1's children: 5 (merged by subject, sent 01:30), 2 (with its child 6), 12 (its dummy
    # parent z pruned); the dummy x at the root holds 3, 4 and 8 (merged by subject); 7's dummy
    # parent is gone; 9 and 10 share a new dummy; 11 stands alone
    assert thread(threaded, "REFERENCES") == b"(1 (5)(2 6)(12))((3)(4)(8))(7)((9)(10))(11)"


def test_thread_orderedsubject(threaded):
    assert thread(threaded, "ORDEREDSUBJECT") == b"(1 (5)(2)(6)(12))(3 (4)(8))(7)(9 10)(11)"


def test_uid_thread_with_search_criteria(threaded):
    typ, data = threaded.fetch("1:12", "(UID)")
    uid = {int(f.split()[0]): int(f.split()[2].rstrip(b")")) for f in data}
    expected = "((%d)(%d))(%d)" % (uid[9], uid[10], uid[11])
    assert thread(threaded, "REFERENCES", "SENTSINCE", "1-Feb-2020", "NOT", "SUBJECT", "meeting", "NOT", "SUBJECT",
                  "budget", "NOT", "SUBJECT", "lonely", uid=True).decode() == expected
    assert thread(threaded, "REFERENCES", "SUBJECT", '"nothing like it"') == b""


def test_thread_algorithms_on_the_shapes_of_rfc_5256s_example():
    """The RFC's THREAD REFERENCES example answer has every shape: a lone message "(166)", a
    root dummy "((170)(179))", branching "(177 (183)(182)(188 (184)(189))(185 186)(187))", a
    chain "(205 206 207)"; made here from messages that give exactly those shapes."""
    def m(n, sent, subject, msgid, refs=(), reply=False):
        return ThreadMessage(n, n, sent, subject, reply, msgid, refs)

    messages = [
        m(166, 1, "A", "166"),
        m(170, 2, "B", "170", ("x170",)), m(179, 9, "B", "179", ("x170",)),
        m(177, 3, "C", "177"), m(183, 4, "C", "183", ("177",)), m(182, 5, "C", "182", ("177",)),
        m(188, 6, "C", "188", ("177",)), m(184, 7, "C", "184", ("177", "188")),
        m(189, 11, "C", "189", ("177", "188")), m(185, 8, "C", "185", ("177",)),
        m(186, 10, "C", "186", ("177", "185")), m(187, 12, "C", "187", ("177",)),
        m(205, 13, "D", "205"), m(206, 14, "D", "206", ("205",)), m(207, 15, "D", "207", ("205", "206")),
    ]
    assert references(messages) == "(166)((170)(179))(177 (183)(182)(188 (184)(189))(185 186)(187))(205 206 207)"
    assert ordered_subject(messages) == ("(166)(170 179)(177 (183)(182)(188)(184)(185)(186)(189)(187))"
                                         "(205 (206)(207))")


def test_thread_of_a_deep_chain_is_flat_and_costs_no_recursion():
    n = 20_000  # far deeper than Python's recursion limit
    messages = [ThreadMessage(i + 1, i + 1, i, "S", i > 0, f"m{i}", (f"m{i - 1}",) if i else ()) for i in range(n)]
    started = time.monotonic()
    text = references(list(reversed(messages)))  # out of order: each link is checked for a loop
    assert text == "(" + " ".join(str(i + 1) for i in range(n)) + ")"
    assert time.monotonic() - started < 5


def test_thread_reference_loops_are_not_followed():
    messages = [ThreadMessage(1, 1, 1, "A", False, "a", ("b",)), ThreadMessage(2, 2, 2, "B", False, "b", ("a",)),
                ThreadMessage(3, 3, 3, "C", False, "c", ("c",))]
    # 1 made "b" a dummy parent of itself; 2 is that b, and its link under 1 would close a loop
    assert references(messages) == "(2 1)(3)"


def test_sorted_by_sent_date_across_time_zones(server, client):
    # 10:00 +0800 is 02:00 UTC, before 03:00 +0000
    for raw in (mail("x", "Sat, 01 Feb 2020 03:00:00 +0000"), mail("y", "Sat, 01 Feb 2020 10:00:00 +0800"),
                mail("z", email.utils.format_datetime(email.utils.parsedate_to_datetime(
                    "Sat, 01 Feb 2020 01:59:59 -0000")))):
        deliver(server.ctx.store, raw, [server.users[0][1]])
    client.select("INBOX")
    assert sort(client, "(DATE)") == [3, 2, 1]


def test_references_equals_the_step_by_step_oracle_on_random_folders():
    """The fast REFERENCES (columns, pruning in one pass) against the RFC's steps taken literally
    (tests/imap/thread_oracle.py), on folders with missing parents, duplicate ids, loops and
    shared subjects."""
    import random

    from .thread_oracle import references as oracle

    rng = random.Random(5256)
    for _ in range(400):
        n = rng.randint(1, 40)
        pool = [f"id{k}" for k in range(n + 10)]
        messages = []
        for i in range(n):
            refs = tuple(rng.choice(pool) for _ in range(rng.choice((0, 0, 1, 1, 2, 4))))
            msgid = rng.choice(pool) if rng.random() < 0.9 else None
            messages.append(ThreadMessage(i + 1, i + 1, rng.randint(0, 30), rng.choice(("", "A", "B", "C")),
                                          rng.random() < 0.4, msgid, refs))
        assert references(messages) == oracle(messages), messages


def test_sort_keeps_the_sessions_numbers_while_another_session_expunges(server, sorted_folder):
    """SORT (like SEARCH) may not be answered with EXPUNGE (RFC 3501 7.4.1): an expunge by
    another session is told after, and meanwhile the answer uses this session's numbers."""
    other = server.client()
    other.select("INBOX")
    other.store("2", "+FLAGS", "\\Deleted")
    other.expunge()
    other.logout()
    typ, data = sorted_folder.sort("(ARRIVAL)", "UTF-8", "ALL")
    assert typ == "OK" and data == [b"4 3 1"]  # message 2 is gone; 3 and 4 keep their numbers
    assert "EXPUNGE" not in sorted_folder.untagged_responses
    typ, data = sorted_folder.uid("SORT", "(ARRIVAL)", "UTF-8", "ALL")  # a UID SORT may tell it
    assert typ == "OK" and sorted_folder.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert sort(sorted_folder, "(ARRIVAL)") == [3, 2, 1]  # renumbered: the old 4 is now 3


def test_sort_and_thread_commands_write_back_what_they_parse():
    from mailserver.config import IMAPConfig
    from mailserver.imap.commands import Invalid
    from mailserver.imap.parser import parse_command

    for line in (b"a SORT (REVERSE DATE SUBJECT) UTF-8 ALL", b"b UID SORT RETURN (MIN COUNT) (DISPLAYFROM) US-ASCII "
                 b'SINCE 1-Feb-1994 FROM "x y"', b"c SORT RETURN () (SIZE) UTF-8 OR SEEN NOT FLAGGED",
                 b"d THREAD REFERENCES UTF-8 ALL", b'e UID THREAD ORDEREDSUBJECT US-ASCII SUBJECT "a b"'):
        cmd = parse_command(line + b"\r\n")
        assert not isinstance(cmd, Invalid), (line, cmd)
        assert parse_command(cmd.to_wire()) == cmd
    # the search part is bounded as SEARCH's is
    tight = IMAPConfig(max_search_depth=3, max_search_keys=4)
    assert parse_command(b"a SORT (DATE) UTF-8 NOT NOT NOT ALL\r\n", tight) == Invalid("a", "TOODEEP")
    assert parse_command(b"a THREAD REFERENCES UTF-8 SEEN SEEN SEEN SEEN SEEN\r\n", tight) == Invalid("a", "TOOMANYKEYS")

"""The parser: typed commands, BAD as a value, a Hypothesis round trip, and the bounded framer."""
from __future__ import annotations

import asyncio
import datetime as dt

from hypothesis import example, given, settings, strategies as st

from mailserver.imap.codec import SeqSet, decode_mailbox, encode_mailbox
from mailserver.imap.commands import (Append, AppendMessage, Authenticate, Copy, Expunge, Fetch, FetchAtt, Id, Invalid, ListCmd,
                                      Login, MailboxCommand, Qresync, Rename, Search, Simple, Status, Store)
from mailserver.imap.framing import Framed, Refused, read_command
from mailserver.imap.parser import _DEFAULTS, _kept, _parse, parse, parse_command, parse_fetch_att


def test_login_with_quoted_and_literal_strings():
    cmd = parse_command(b'a1 LOGIN "zhang.wei@hz.example.cn" {5}\r\np"a\\w\r\n')
    assert cmd == Login("a1", "zhang.wei@hz.example.cn", 'p"a\\w')


def test_fetch_items_and_sections():
    cmd = parse_command(b"a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From Subject)]<0.100> BODY[TEXT])\r\n")
    assert isinstance(cmd, Fetch) and cmd.uid
    assert cmd.seqset.resolve(9) == [(1, 9)]
    assert cmd.atts[1] == FetchAtt("BODY[]", (1, 2), "HEADER.FIELDS", ("FROM", "SUBJECT"), (0, 100), True, True)
    assert cmd.atts[1].response_name() == "BODY[1.2.HEADER.FIELDS (FROM SUBJECT)]<0>"
    assert parse_fetch_att("BODY[]").response_name() == "BODY[]"


def test_fetch_macros_expand():
    cmd = parse_command(b"a FETCH 1 ALL\r\n")
    assert [a.name for a in cmd.atts] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]


def test_search_tree_with_utf8_literal():
    word = "违法".encode()
    cmd = parse_command(b"t SEARCH CHARSET UTF-8 OR SUBJECT {%d}\r\n" % len(word) + word +
                        b" NOT SEEN (SINCE 1-Feb-2026 LARGER 10) UID 1:5\r\n")
    assert cmd == Search("t", "UTF-8", (("OR", ("SUBJECT", "违法"), ("NOT", ("SEEN",))),
                                        ("AND", (("SINCE", dt.date(2026, 2, 1)), ("LARGER", 10))),
                                        ("UID", SeqSet.parse("1:5"))), False)


def test_unknown_charset_is_badcharset():
    assert parse_command(b"t SEARCH CHARSET KOI8-R ALL\r\n") == Invalid("t", "BADCHARSET")


def test_bad_input_is_a_value_with_the_tag():
    for line in (b"a1 FROB\r\n", b"a2 FETCH\r\n", b'a3 LOGIN "x\r\n', b"a4 FETCH 0 FLAGS\r\n",
                 b"a5 STORE 1 FLAGS (\\Recent)\r\n", b"a6 SELECT (\r\n", b"a7 LIST \"\" *)\r\n"):
        result = parse_command(line)
        assert isinstance(result, Invalid), line
        assert result.tag == line.split()[0].decode()
    assert parse_command(b"\r\n") == Invalid("*", "missing tag")


def test_condstore_modifiers():
    cmd = parse_command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n")
    assert isinstance(cmd, Fetch) and cmd.uid and cmd.changedsince == 12345
    assert parse_command(b"a FETCH 1 FLAGS\r\n").changedsince is None
    cmd = parse_command(b"a STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Deleted)\r\n")
    assert cmd == Store("a", SeqSet.parse("1:3"), "+", True, ("\\Deleted",), False, 0)
    cmd = parse_command(b"a UID STORE 7 (unchangedsince 9223372036854775807) FLAGS \\Seen $x\r\n")
    assert cmd == Store("a", SeqSet.parse("7"), "", False, ("\\Seen", "$x"), True, (1 << 63) - 1)
    assert parse_command(b"a SELECT INBOX (CONDSTORE)\r\n") == MailboxCommand("a", "SELECT", "INBOX", True)
    assert parse_command(b"a EXAMINE INBOX (condstore)\r\n") == MailboxCommand("a", "EXAMINE", "INBOX", True)
    cmd = parse_command(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338 UNSEEN\r\n')
    assert cmd.criteria == (("MODSEQ", 620162338), ("UNSEEN",))
    assert parse_command(b"a SEARCH NOT MODSEQ 0\r\n").criteria == (("NOT", ("MODSEQ", 0)),)
    assert parse_command(b"a STATUS INBOX (SIZE HIGHESTMODSEQ)\r\n") == Status("a", "INBOX", ("SIZE", "HIGHESTMODSEQ"))


def test_qresync_select_parameters_and_vanished_modifier():
    cmd = parse_command(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n")
    assert cmd == MailboxCommand("a", "SELECT", "INBOX", False,
                                 Qresync(67890007, 20050715194045000, SeqSet.parse("41,43:211,214:541")))
    cmd = parse_command(b"a EXAMINE INBOX (CONDSTORE qresync (1 2 (1:3,5 2:4,9)))\r\n")
    assert cmd.condstore and cmd.qresync == Qresync(1, 2, None, (SeqSet.parse("1:3,5"), SeqSet.parse("2:4,9")))
    cmd = parse_command(b"a SELECT INBOX (QRESYNC (4294967295 9223372036854775807 7 (1 7)))\r\n")
    assert cmd.qresync == Qresync(0xFFFFFFFF, (1 << 63) - 1, SeqSet.parse("7"), (SeqSet.parse("1"), SeqSet.parse("7")))
    cmd = parse_command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n")
    assert isinstance(cmd, Fetch) and cmd.changedsince == 12345 and cmd.vanished
    assert parse_command(b"a UID FETCH 1:* (FLAGS) (vanished CHANGEDSINCE 7)\r\n").vanished
    assert not parse_command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 7)\r\n").vanished


def test_bad_qresync_syntax_is_invalid():
    for line in (b"a SELECT INBOX (QRESYNC)", b"a SELECT INBOX (QRESYNC ())", b"a SELECT INBOX (QRESYNC (1))",
                 b"a SELECT INBOX (QRESYNC (0 1))", b"a SELECT INBOX (QRESYNC (4294967296 1))",
                 b"a SELECT INBOX (QRESYNC (1 0))", b"a SELECT INBOX (QRESYNC (1 x))",
                 b"a SELECT INBOX (QRESYNC (1 2 1:*))", b"a SELECT INBOX (QRESYNC (1 2 1:3 (1:3)))",
                 b"a SELECT INBOX (QRESYNC (1 2 1:3 (1:* 1:3)))", b"a SELECT INBOX (QRESYNC (1 2 1:3 (1 2) 5))",
                 b"a SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))", b"a SELECT INBOX (CONDSTORE CONDSTORE)",
                 b"a SELECT INBOX (QRESYNC 1 2)", b"a CREATE x (QRESYNC (1 2))",
                 b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)", b"a UID FETCH 1 (FLAGS) (VANISHED)",
                 b"a UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED VANISHED)",
                 b"a UID FETCH 1 (FLAGS) (CHANGEDSINCE VANISHED)"):
        assert isinstance(parse_command(line + b"\r\n"), Invalid), line


def test_esearch_return_options():
    cmd = parse_command(b"a UID SEARCH RETURN (MIN MAX COUNT ALL) CHARSET UTF-8 SEEN\r\n")
    assert cmd == Search("a", "UTF-8", (("SEEN",),), True, ("MIN", "MAX", "COUNT", "ALL"))
    assert parse_command(b"a SEARCH RETURN () ALL\r\n").return_opts == ()
    assert parse_command(b"a SEARCH ALL\r\n").return_opts is None
    # RFC 5267 4.2: CONTEXT is a hint the server may ignore; RFC 5182 SAVE with ESORT
    assert parse_command(b"a UID SEARCH RETURN (CONTEXT COUNT) ALL\r\n").return_opts == ("COUNT",)
    assert parse_command(b"a SORT RETURN (CONTEXT) (DATE) UTF-8 ALL\r\n").return_opts == ()
    assert parse_command(b"a SORT RETURN (SAVE MIN) (DATE) UTF-8 ALL\r\n").return_opts == ("SAVE", "MIN")


def test_bad_condstore_and_esearch_syntax_is_invalid():
    for line in (b"a FETCH 1 FLAGS (CHANGEDSINCE 0)", b"a FETCH 1 FLAGS (CHANGEDSINCE -1)",
                 b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", b"a FETCH 1 FLAGS (CHANGEDSINCE)",
                 b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", b"a FETCH 1 FLAGS (VANISHED)",
                 b"a FETCH 1 FLAGS CHANGEDSINCE 1", b"a FETCH 1 FLAGS ()",
                 b"a STORE 1 (UNCHANGEDSINCE x) FLAGS (\\Seen)", b"a STORE 1 (UNCHANGEDSINCE 1)",
                 b"a STORE 1 (CHANGEDSINCE 1) FLAGS (\\Seen)", b"a SELECT INBOX (QRESYNC)", b"a SELECT INBOX ()",
                 b"a CREATE x (CONDSTORE)", b"a SEARCH MODSEQ", b"a SEARCH MODSEQ 1x",
                 b'a SEARCH MODSEQ "/flags/\\\\seen" frob 5', b'a SEARCH MODSEQ "/flags/\\\\seen" all',
                 b"a SORT RETURN (CONTEXT CONTEXT) (DATE) UTF-8 ALL", b"a SEARCH RETURN (MIN MIN) ALL", b"a SEARCH RETURN (ALL)",
                 b"a STATUS INBOX (FROB)"):
        assert isinstance(parse_command(line + b"\r\n"), Invalid), line


def test_mailbox_names_are_modified_utf7():
    # Oracle: modified UTF-7 is the stdlib's UTF-7 with "&" for "+" and "," for "/" in base64.
    oracle = "&" + "交通违法".encode("utf-7")[1:].decode().replace("/", ",")
    assert encode_mailbox("交通违法/通知 & more") == oracle + "/&kBp35Q- &- more"
    assert decode_mailbox(encode_mailbox("交通违法/通知 & more")) == "交通违法/通知 & more"
    cmd = parse_command(b"a SELECT &kBp35Q-\r\n")
    assert cmd == MailboxCommand("a", "SELECT", "通知")
    assert parse_command(b"a SELECT inbox\r\n").mailbox == "INBOX"


# -- Hypothesis: generated commands survive to_wire -> parse_command -------------------------------

tags = st.text("abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=8)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*%/"), min_size=1,
                max_size=20).filter(lambda n: n.upper() != "INBOX" and not n.upper().startswith("INBOX/"))
seqsets = st.lists(st.tuples(st.integers(1, 5000), st.one_of(st.none(), st.integers(1, 5000), st.just(0))),
                   min_size=1, max_size=4).map(
    lambda rs: SeqSet.parse(",".join(str(a) if b is None else f"{a}:{'*' if b == 0 else b}" for a, b in rs)))
flags = st.lists(st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded",
                                  "Junk", "$label1"]), max_size=4, unique=True).map(tuple)
fetch_atts = st.lists(st.one_of(
    st.sampled_from([FetchAtt(n) for n in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY",
                                           "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ")]),
    st.builds(lambda part, text, peek, partial: FetchAtt(
        "BODY[]", tuple(part), text[0], text[1], partial, peek, True),
        st.lists(st.integers(1, 9), max_size=3),
        st.sampled_from([(None, ()), ("HEADER", ()), ("TEXT", ()), ("HEADER.FIELDS", ("FROM", "SUBJECT")),
                         ("HEADER.FIELDS.NOT", ("X-TUID",))]),
        st.booleans(), st.one_of(st.none(), st.tuples(st.integers(0, 999), st.integers(1, 999))))),
    min_size=1, max_size=4).map(tuple)
modseqs = st.integers(1, (1 << 63) - 1)
#: QRESYNC's known-uids and seq-match-data: sequence sets without "*"
known_sets = st.lists(st.tuples(st.integers(1, 5000), st.one_of(st.none(), st.integers(1, 5000))),
                      min_size=1, max_size=4).map(
    lambda rs: SeqSet.parse(",".join(str(a) if b is None else f"{a}:{b}" for a, b in rs)))
modseqs_or_zero = st.integers(0, (1 << 63) - 1)
return_opts = st.one_of(st.none(), st.lists(st.sampled_from(["MIN", "MAX", "COUNT", "ALL"]), unique=True).map(tuple))
search_leaf = st.one_of(
    st.sampled_from([("SEEN",), ("UNSEEN",), ("DELETED",), ("RECENT",), ("NEW",), ("ALL",)]),
    st.tuples(st.sampled_from(["SUBJECT", "FROM", "BODY", "TEXT", "TO", "CC", "BCC"]), texts),
    st.tuples(st.sampled_from(["BEFORE", "SINCE", "ON", "SENTSINCE"]), st.dates(dt.date(1990, 1, 1))),
    st.tuples(st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 10 ** 9)),
    st.tuples(st.just("UID"), seqsets), st.tuples(st.just("SEQ"), seqsets),
    st.tuples(st.just("KEYWORD"), st.sampled_from(["$Forwarded", "Junk"])),
    st.tuples(st.just("HEADER"), st.sampled_from(["X-NOTICE", "MESSAGE-ID"]), texts),
    st.tuples(st.just("MODSEQ"), modseqs_or_zero))
search_keys = st.recursive(search_leaf, lambda inner: st.one_of(
    st.tuples(st.just("NOT"), inner), st.tuples(st.just("OR"), inner, inner),
    st.lists(inner, min_size=1, max_size=3).map(lambda ks: ("AND", tuple(ks)))), max_leaves=6)
commands = st.one_of(
    st.builds(Simple, tags, st.sampled_from(["CAPABILITY", "NOOP", "LOGOUT", "CHECK", "IDLE", "UNSELECT"])),
    st.builds(Login, tags, texts, texts),
    st.builds(Authenticate, tags, st.just("PLAIN"), st.one_of(st.none(), st.just("AGFAAGI="))),
    st.builds(MailboxCommand, tags, st.sampled_from(["SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE"]), names),
    st.builds(MailboxCommand, tags, st.sampled_from(["SELECT", "EXAMINE"]), names, st.booleans(),
              st.one_of(st.none(), st.builds(Qresync, st.integers(1, 0xFFFFFFFF), modseqs,
                                             st.one_of(st.none(), known_sets),
                                             st.one_of(st.none(), st.tuples(known_sets, known_sets))))),
    st.builds(Rename, tags, names, names),
    st.builds(Status, tags, names, st.lists(st.sampled_from(["MESSAGES", "UIDNEXT", "UNSEEN", "RECENT", "SIZE",
                                                             "HIGHESTMODSEQ"]),
                                            min_size=1, max_size=4, unique=True).map(tuple)),
    st.builds(Append, tags, names, st.lists(st.builds(
        AppendMessage, flags.filter(lambda f: f != ()) | st.just(()),
        st.one_of(st.none(), st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 1, 1),
                                          timezones=st.just(dt.timezone(dt.timedelta(hours=8)))).map(
            lambda d: d.replace(microsecond=0))),
        st.binary(min_size=1, max_size=200), st.booleans()), min_size=1, max_size=3).map(tuple)),
    st.builds(Fetch, tags, seqsets, fetch_atts, st.booleans(), st.one_of(st.none(), modseqs)),
    st.builds(Fetch, tags, seqsets, fetch_atts, st.just(True), modseqs, st.booleans()),  # VANISHED: UID FETCH only
    st.builds(Store, tags, seqsets, st.sampled_from(["+", "-", ""]), st.booleans(), flags, st.booleans(),
              st.one_of(st.none(), modseqs_or_zero)),
    st.builds(Copy, tags, seqsets, names, st.booleans(), st.booleans()),
    st.builds(Search, tags, st.sampled_from([None, "UTF-8"]), st.lists(search_keys, min_size=1, max_size=3)
              .map(tuple), st.booleans(), return_opts),
    st.builds(Expunge, tags, st.one_of(st.none(), seqsets)),
    st.builds(Id, tags, st.one_of(st.none(), st.lists(st.tuples(texts, st.one_of(st.none(), texts)), max_size=3)
                                   .map(tuple))),
    st.builds(ListCmd, tags, st.just(""), st.lists(names, min_size=1, max_size=2).map(tuple), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(commands)
@example(Login("0", "", "\n"))  # found by Hypothesis: a quoted "\n" (the quotable check's "$")
def test_generated_commands_round_trip(cmd):
    parsed = parse_command(cmd.to_wire())
    assert parsed == cmd


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    result = parse_command(data)
    assert result is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"(", b")", b"[", b"]", b'"', b"\\", b"{3}\r\n", b"{2+}\r\n", b"*",
                                 b"FETCH", b"BODY[", b"1:*", b"\r\n", b"\x00", b"\xff"]), max_size=30))
def test_grammar_fragments_never_raise(parts):
    assert parse_command(b"".join(parts)) is not None


_SET_TEMPLATES = [b"TAG UID FETCH SET (BODY.PEEK[])\r\n", b"TAG FETCH SET (FLAGS)\r\n", b"TAG fetch SET FAST\r\n",
                  b"TAG UID STORE SET +FLAGS (\\Seen $Label1)\r\n", b"TAG STORE SET -FLAGS.SILENT (\\Deleted)\r\n",
                  b"TAG uid store SET FLAGS ()\r\n", b"TAG UID FETCH SET (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n",
                  b"TAG UID STORE SET (UNCHANGEDSINCE 3) +FLAGS (\\Seen)\r\n", b"TAG UID STORE SET +FLAGS (\\Recent)\r\n",
                  b"TAG FETCH SET (NOSUCH)\r\n", b"TAG FETCH SET\r\n", b"TAG STORE SET  +FLAGS (\\Seen)\r\n"]
_SETS = st.one_of(st.sampled_from([b"1", b"1:*", b"*", b"7,9:12", b"0", b"1:0", b"4294967295", b"4294967296",
                                   b"99999999999999999999", b"1,,2", b":", b"1:", b"*:*"]),
                  st.from_regex(rb"\A[0-9:,*]{1,10}\Z"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SET_TEMPLATES), st.lists(st.tuples(st.sampled_from([b"a1", b"B.2", b"x"]), _SETS),
                                                  min_size=2, max_size=6))
def test_a_fetch_or_store_kept_but_for_its_set_parses_as_it_does_in_full(template, uses):
    """``parse`` keeps a FETCH or STORE by its text but for the tag and the set: each use, with
    any tag and set (numbers out of range too), gives what parsing it in full gives."""
    _kept.clear()
    for tag, numbers in uses:
        buf = template.replace(b"TAG", tag).replace(b"SET", numbers)
        assert parse(buf) == _parse(buf, _DEFAULTS)


def test_a_uid_fetch_of_another_message_is_the_kept_fetch_with_its_own_set():
    _kept.clear()
    first = parse_command(b"a1 UID FETCH 17 (BODY.PEEK[])\r\n")
    second = parse_command(b"a2 UID FETCH 18:20,* (BODY.PEEK[])\r\n")
    assert len(_kept) == 1  # one entry for both
    assert (second.tag, second.seqset, second.atts, second.uid) == ("a2", SeqSet.parse("18:20,*"), first.atts, True)
    assert first.tag == "a1" and first.seqset == SeqSet.parse("17")


# -- the framer ------------------------------------------------------------------------------------

def _frame(data: bytes, max_line=100, max_literal=50):
    async def go():
        reader = asyncio.StreamReader(limit=max_line + 2)
        reader.feed_data(data)
        reader.feed_eof()
        sent = []

        async def cont():
            sent.append("+")

        return await read_command(reader, max_line, max_literal, cont), sent
    return asyncio.run(go())


def test_framer_joins_literals_and_asks_for_synchronising_ones():
    framed, sent = _frame(b"a LOGIN {3}\r\nabc {2+}\r\nxy\r\n")
    assert framed == Framed(b"a LOGIN {3}\r\nabc {2+}\r\nxy\r\n") and sent == ["+"]


def test_framer_refuses_a_literal_over_the_limit_before_reading_it():
    framed, sent = _frame(b"a APPEND INBOX {51}\r\n")
    assert framed == Refused("a", "literal too large", fatal=False) and sent == []
    framed, _ = _frame(b"b APPEND INBOX {51+}\r\n")
    assert framed.fatal


def test_framer_refuses_a_long_line_and_the_next_command_still_reads():
    async def go():
        reader = asyncio.StreamReader(limit=102)
        reader.feed_data(b"a NOOP " + b"x" * 500 + b"\r\nb NOOP\r\n")
        reader.feed_eof()

        async def cont():
            pass
        first = await read_command(reader, 100, 50, cont)
        second = await read_command(reader, 100, 50, cont)
        return first, second
    first, second = asyncio.run(go())
    assert isinstance(first, Refused) and first.reason == "line too long"
    assert second == Framed(b"b NOOP\r\n")


def test_a_final_line_break_is_never_taken_for_the_end_of_a_token():
    """Python's "$" also matches before a last "\\n"; every "whole token" check uses \\Z."""
    from mailserver.identity.addresses import LOCAL_PART
    from mailserver.imap.codec import astring
    from mailserver.registry.agencies import AGENCY_ID

    assert astring("\n") == b"{1}\r\n\n" and astring("a\r") == b"{2}\r\na\r"  # literals, never quoted
    assert astring("zhang wei") == b'"zhang wei"'
    assert isinstance(parse_command(b"a\n NOOP\r\n"), Invalid)  # a tag cannot end in a line break
    assert not LOCAL_PART.match("zhang.wei\n") and LOCAL_PART.match("zhang.wei")
    assert not AGENCY_ID.match("traffic-police\n") and AGENCY_ID.match("traffic-police")

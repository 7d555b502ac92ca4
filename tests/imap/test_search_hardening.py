"""SEARCH bounded (issue 11, items 3 and 4): a deeply nested SEARCH is answered BAD [LIMIT] and
the session goes on (it died of an uncaught RecursionError); many searching connections of one
citizen leave other citizens' logins and deliveries unhurried."""
from __future__ import annotations

import pytest

from mailserver.imap.commands import Invalid, Search
from mailserver.imap.parser import parse_command

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
def test_deep_or_large_search_is_bad_and_the_session_goes_on(server, text, reply):
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    assert raw.command("a", f"SEARCH {text}")[-1] == b"a " + reply + b"\r\n"
    assert raw.command("b", f"UID SEARCH {text}")[-1] == b"b " + reply + b"\r\n"
    assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    raw.close()


def test_searches_up_to_the_limits_are_answered(server):
    raw = server.raw()
    assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    for text in (_chain("NOT ", "ALL", 63), _chain("(", "ALL", 63) + ")" * 63, _chain("OR SEEN ", "ALL", 63),
                 " ".join(["UNSEEN"] * 256)):
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

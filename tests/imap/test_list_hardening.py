"""LIST patterns in linear time, and folders bounded per account (issue 11, item 2).

``LIST "" "*a*a*a*a*a*b"`` against a folder of 110 "a" made a backtracking regular expression
hold the event loop for seconds; one 6 KB ``CREATE "q/q/.../q"`` made 3,000 folders. The matcher
is held against the regular expression it replaced (the slow, correct oracle) on small input."""
from __future__ import annotations

import re
import threading
import time

from hypothesis import given, settings, strategies as st

from mailserver.imap.listmatch import ListPatterns, parents
from tests.abuse import assert_responsive_while, city, city_factory  # noqa: F401  (fixtures)

from .conftest import server_with


def regex_oracle(reference: str, pattern: str, name: str) -> bool:
    """How LIST matched before: a regular expression (correct, and exponential in the wildcards)."""
    full = reference + pattern
    out = [".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in full]
    if full.upper().startswith("INBOX"):
        return re.match(r"^(?:(?i:INBOX)" + "".join(out[5:]) + ")$", name, re.DOTALL) is not None
    return re.match("^" + "".join(out) + "$", name, re.DOTALL) is not None


pattern_text = st.text("ab/*%", max_size=8)
names = st.text("ab/", max_size=9) | st.sampled_from(["INBOX", "INBOX/a", "INBOX/a/b", "Inbox", "a/INBOX"])


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["", "a", "a/", "INBOX", "inbox/"]), st.lists(pattern_text | st.just("inbox%"), min_size=1,
                                                                       max_size=3), names)
def test_matcher_agrees_with_the_regular_expression(reference, patterns, name):
    expected = any(regex_oracle(reference, p, name) for p in patterns)
    assert ListPatterns(reference, patterns).matches(name) == expected


def test_matching_time_is_linear_in_the_name():
    patterns = ListPatterns("", ["*a*a*a*a*a*a*a*a*b", "%a%a%a%a%b", "*a%a*a%a*b"])
    for n in (500, 5000):
        start = time.perf_counter()
        assert not patterns.matches("a" * n)
        assert patterns.matches("a" * n + "b")
        elapsed = time.perf_counter() - start
        assert elapsed < 0.05 * n / 500, (n, elapsed)  # the regex took seconds at n = 110


def test_parents_are_every_superior_of_a_name():
    assert parents(["a/b/c", "x", "a/d", "p/q"]) == {"a", "a/b", "p"}
    assert parents(["/".join("q" * (i + 1)) for i in range(3)]) == {"q", "q/q"}


def test_wildcard_list_leaves_the_loop_free(city):  # noqa: F811
    abuser = city.imap(0)
    assert abuser.create("a" * 110)[0] == "OK"
    answers: list[tuple[str, list]] = []

    def abuse(stop: threading.Event) -> None:
        while not stop.is_set():
            answers.append(abuser.list('""', "*a*a*a*a*a*b"))

    # the probe runs while a LIST is being answered (on main: the loop is held for seconds)
    assert_responsive_while(city, abuse, warmup=0.3, join=60)
    assert answers and all(a == ("OK", [None]) for a in answers)  # nothing matches: no untagged LIST
    typ, lines = abuser.list('""', "*a*a*a*a*a")
    assert typ == "OK" and lines == [b'(\\HasNoChildren) "/" "' + b"a" * 110 + b'"']
    abuser.logout()


def test_folder_limits_answer_no_limit_and_the_session_goes_on(tmp_path, caplog):
    caplog.set_level("INFO", "civicmail.imap")
    with server_with(tmp_path / "d", "accounts.max_folders=12") as running:
        raw = running.raw()
        before = raw.command("b", 'LIST "" "*"')
        count = len(before) - 1
        deep = "/".join(["q"] * 3000)  # the 6 KB CREATE: 3,000 folders on main
        assert raw.command("c1", f'CREATE "{deep}"')[-1].startswith(b"c1 NO [LIMIT]")
        assert raw.command("c2", f'CREATE "{"/".join(["q"] * 21)}"')[-1].startswith(b"c2 NO [LIMIT]")
        assert raw.command("c3", f'CREATE "{"x" * 256}"')[-1].startswith(b"c3 NO [LIMIT]")
        assert raw.command("c4", f'CREATE "{"/".join(["q"] * 3)}"')[-1].startswith(b"c4 OK")
        assert raw.command("c5", f'CREATE "{"x" * 255}"')[-1].startswith(b"c5 OK")
        assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
        made = count + 4
        while made < 12:
            assert raw.command("m", f'CREATE "m{made}"')[-1].startswith(b"m OK")
            made += 1
        assert raw.command("c6", 'CREATE "one-too-many"')[-1].startswith(b"c6 NO [LIMIT]")
        # RENAME is held to the same limits, the children's new names included
        assert raw.command("r1", f'RENAME "q" "{"/".join(["r"] * 19)}"')[-1].startswith(b"r1 NO [LIMIT]")
        assert raw.command("r2", 'RENAME "q" "a/b"')[-1].startswith(b"r2 NO [LIMIT]")  # "a" would be a 13th
        assert raw.command("r3", 'RENAME "q" "r"')[-1].startswith(b"r3 OK")
        assert len(raw.command("l", 'LIST "" "*"')) - 1 == 12
        assert raw.command("l2", 'LIST "" "r/%/%"')[:-1] == [b'* LIST (\\HasNoChildren) "/" "r/q/q"\r\n']
        raw.close()
        assert sum("imap limit=folders client=127.0.0.1" in r.getMessage() for r in caplog.records) == 6

"""LIST patterns in linear time (issue 11, item 2).

``LIST "" "*a*a*a*a*a*b"`` against a folder of 110 "a" made a backtracking regular expression
hold the event loop for seconds. The matcher is held against the regular expression it replaced
(the slow, correct oracle) on small input."""
from __future__ import annotations

import re
import threading
import time

from hypothesis import given, settings, strategies as st

from mailserver.imap.listmatch import ListPatterns, parents
from tests.abuse import assert_responsive, city, city_factory  # noqa: F401  (fixtures)


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
    stop = threading.Event()
    answers: list[tuple[str, list]] = []

    def abuse() -> None:
        while not stop.is_set():
            answers.append(abuser.list('""', "*a*a*a*a*a*b"))

    thread = threading.Thread(target=abuse, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # the first LIST is being answered (on main: the loop is held for seconds)
        assert_responsive(city)
    finally:
        stop.set()
        thread.join(60)
    assert answers and all(a == ("OK", [None]) for a in answers)  # nothing matches: no untagged LIST
    typ, lines = abuser.list('""', "*a*a*a*a*a")
    assert typ == "OK" and lines == [b'(\\HasNoChildren) "/" "' + b"a" * 110 + b'"']
    abuser.logout()

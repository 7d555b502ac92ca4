"""The responsiveness probe of tests/abuse.py measures what it says: a quiet city passes it, and a
city whose loop is held (a blocking sleep scheduled on it) fails it."""
from __future__ import annotations

import threading
import time

import pytest

from tests.abuse import assert_responsive, city, city_factory  # noqa: F401  (fixtures)


def test_a_quiet_city_is_responsive(city):  # noqa: F811
    assert_responsive(city)


def test_a_blocked_loop_fails_the_probe(city):  # noqa: F811
    held = threading.Event()

    def block():
        held.set()
        time.sleep(2.5)  # the loop thread itself sleeps: nothing else runs on it

    city.server.loop.call_soon_threadsafe(block)
    assert held.wait(5)
    with pytest.raises(AssertionError, match="took"):
        assert_responsive(city, within=1.0)

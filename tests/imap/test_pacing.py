"""Commands per second per connection (imap.max_commands_per_second): a client going faster
is slowed down, never refused. The bucket's arithmetic is checked with given times; the server
is checked over a socket for what a client sees (every command answered, in order)."""
from __future__ import annotations

import pytest

from mailserver.imap.pacing import Pacer

from .conftest import start_server


def test_bucket_lets_a_burst_through_then_paces_to_the_rate():
    p = Pacer(rate=10, burst=3, now=100.0)
    assert [p.delay(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert p.delay(100.0) == pytest.approx(0.1)   # the fourth waits for one token
    assert p.delay(100.1) == pytest.approx(0.1)   # still one behind: a queue of one
    assert p.delay(100.5) == 0.0                  # caught up after a pause
    p2 = Pacer(rate=10, burst=3, now=0.0)
    for _ in range(3):
        p2.delay(0.0)
    assert p2.delay(10.0) == 0.0 and p2.tokens == pytest.approx(2.0)  # refills only to the burst


def test_a_client_over_the_rate_is_slowed_not_refused(tmp_path):
    from mailserver.provision import prepare
    from tests.conftest import make_config

    cfg = make_config(tmp_path / "d", "imap.max_commands_per_second=20", "imap.command_burst=2")
    prepare(cfg)
    running = start_server(cfg)
    try:
        raw = running.raw()
        raw.send(b"".join(b"p%d NOOP\r\n" % i for i in range(12)))  # pipelined, far over the burst
        tagged = []
        while len(tagged) < 12:
            line = raw.line()
            assert line, "connection closed"
            if line.startswith(b"p"):
                tagged.append(line.split()[:2])
        assert tagged == [[b"p%d" % i, b"OK"] for i in range(12)]
        assert raw.command("z", "LOGOUT")[-1].startswith(b"z OK")
        raw.close()
    finally:
        running._stop()

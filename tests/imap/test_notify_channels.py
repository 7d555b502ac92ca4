"""A node LISTENs only to the channels its listeners need (issue 13, section 4), over a real
PostgreSQL: the node's LISTEN thread (``pglisten.ChannelListener``) beside a change hub, and a
second connection that sends what another node's commit sends (``pg_notify`` on a channel).

- reference counting: the first listener of a channel's folders LISTENs, the last UNLISTENs;
  two folders of one channel (5 and 1029) share it; a channel nobody listens to is not received;
- the lost-wake-up rule: a listener is woken once its channel's LISTEN took effect (a change
  committed before that was never heard), and a session that read ``serial()`` before its look
  and subscribes after the LISTEN is told to look;
- the LISTEN connection ended by the server (``pg_terminate_backend``): the thread reconnects,
  LISTENs again, wakes every listener once, and notifications reach them again.

Waits poll a condition with a generous deadline; no test asserts a duration."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from mailserver.store import open_store
from mailserver.store.notify import ChangeHub, folder_channel
from mailserver.store.pglisten import ChannelListener
from tests.conftest import make_config


class Heard:
    """A hub listener that records what woke it (called in the LISTEN thread: no loop)."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self._cond = threading.Condition()

    def __call__(self, key: int) -> None:
        with self._cond:
            self.keys.append(key)
            self._cond.notify_all()

    def wait(self, count: int = 1) -> list[int]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.keys) >= count, 30), self.keys
            return list(self.keys)

    def take(self) -> list[int]:
        with self._cond:
            keys, self.keys = self.keys, []
            return keys


def until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def node(pg_url, tmp_path):
    store = open_store(make_config(tmp_path / "node", store_url=pg_url))
    hub = ChangeHub()
    listener = ChannelListener(store, hub, retry_seconds=0.2)
    listener.start()
    until(lambda: listener.figures.connections == 1, "the LISTEN connection is made")
    yield hub, listener
    listener.stop()
    store.dispose()


@pytest.fixture
def other_node(pg_url):
    url = make_url(pg_url)
    conn = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True)
    yield conn
    conn.close()


def notify(conn: psycopg.Connection, folder_id: int) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (folder_channel(folder_id), str(folder_id)))


def test_listen_and_unlisten_are_counted_per_channel(node, other_node):
    hub, listener = node
    a, b, c = Heard(), Heard(), Heard()
    # the three subscribe before the thread looks at the hub (its wake-up held back until then):
    # otherwise the LISTEN may take effect between two of them, and one subscribing after it is
    # told by ``announced_since`` (tested below), not woken
    hub.on_interest = None
    hub.subscribe(5, a)
    hub.subscribe(5, b)
    hub.subscribe(1029, c)  # 1029 mod 1024 = 5: the same channel
    hub.on_interest = listener.wake
    listener.wake()
    # woken once the LISTEN took effect, with no write: what was committed before it was never heard
    assert a.wait() == [5] and b.wait() == [5] and c.wait() == [1029]
    assert (listener.figures.listens, listener.figures.channels) == (1, 1)
    a.take(), b.take(), c.take()

    notify(other_node, 5)
    assert a.wait() == [5] and b.wait() == [5]
    assert listener.figures.received == 1
    hub.unsubscribe(5, a)  # b still listens: the channel stays
    notify(other_node, 5)
    assert b.wait(2) == [5, 5]
    assert listener.figures.unlistens == 0 and listener.figures.received == 2
    assert a.keys == [5]  # not woken after it left
    hub.unsubscribe(5, b)
    hub.unsubscribe(1029, c)  # the channel's last folder
    until(lambda: listener.figures.channels == 0, "UNLISTEN civicmail_f5")
    assert (listener.figures.listens, listener.figures.unlistens) == (1, 1)

    d = Heard()
    hub.subscribe(6, d)
    assert d.wait() == [6]  # LISTEN civicmail_f6 took effect
    notify(other_node, 5)  # nobody here listens to civicmail_f5: PostgreSQL does not send it
    notify(other_node, 6)  # sent after it: once it is here, the other would have come first
    assert d.wait(2) == [6, 6]
    assert listener.figures.received == 3  # the one on civicmail_f6 only
    assert (listener.figures.listens, listener.figures.channels) == (2, 1)


def test_a_session_that_looked_before_the_listen_is_told_to_look_again():
    """SELECT reads ``serial()``, makes its snapshot, then subscribes: if its channel's LISTEN
    took effect in between, a change committed before the LISTEN was never heard, so the hub
    says "announced since" for every folder of that channel (and of no other)."""
    hub = ChangeHub()
    serial = hub.serial()
    hub.wake_channel(folder_channel(1029))
    assert hub.announced_since(5, serial) and hub.announced_since(1029, serial)
    assert not hub.announced_since(6, serial)
    later = hub.serial()
    assert not hub.announced_since(5, later)


def test_a_dropped_listen_connection_reconnects_and_wakes_every_listener(node, other_node):
    hub, listener = node
    folder, account = Heard(), Heard()
    hub.subscribe(7, folder)
    hub.subscribe_account(3, account)
    assert folder.wait() == [7] and account.wait() == [3]
    until(lambda: listener.figures.channels == 2, "LISTEN civicmail_f7 and civicmail_a3")
    folder.take(), account.take()
    pid = listener.figures.backend_pid
    assert pid
    ended = other_node.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    assert ended
    # what was committed while it was gone is never heard: reconnected, it wakes every listener once
    until(lambda: listener.figures.connections == 2 and listener.figures.channels == 2, "reconnected, LISTENing")
    assert folder.wait() == [7] and account.wait() == [3]
    assert listener.figures.backend_pid not in (0, pid)
    folder.take()
    received = listener.figures.received
    notify(other_node, 7)
    assert folder.wait() == [7]
    assert listener.figures.received == received + 1

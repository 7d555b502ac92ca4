"""Issue 11, item 13: the worker's terminal ``failed`` state has a way back. A message whose
handler failed is listed by `civicmail services failed` and made pending again by
`civicmail services retry` (a real process), after which the worker handles it like new mail."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from sqlalchemy import delete, select

from mailserver.config import REPO_ROOT
from mailserver.registry import Registry
from mailserver.services.topics import add_topic
from mailserver.services.worker import process_pending, service_inboxes
from mailserver.store import open_store
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, ServiceProcessed, Topic

from .conftest import PASSWORD, make_citizens, mail, server, server_factory  # noqa: F401


def civicmail(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "civicmail"), "-c", str(config.source), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def outcomes(store) -> dict[int, str]:
    with store.reader() as s:
        return dict(s.execute(select(ServiceProcessed.message_id, ServiceProcessed.outcome)).all())


def test_failed_service_mail_is_listed_and_retried_from_the_cli(sqlite_config):
    store = open_store(sqlite_config)
    try:
        reg = Registry(sqlite_config, store)
        citizen = make_citizens(reg, 1)[0]
        topic = add_topic(reg, "news", "区县新闻")
        with store.reader() as s:
            box = s.scalar(select(Account.id).where(Account.address == topic.address))
        with store.session() as s:  # the topic's definition vanished (an operator's slip): its handler fails
            s.execute(delete(Topic).where(Topic.id == "news"))
        raw = f"X-Civicmail-Authenticated: citizen={citizen}\r\n".encode() + mail(citizen, topic.address, "订阅", "",
                                                                                  "<sub-1@t>")
        deliver(store, raw, [box])
        deliver(store, raw.replace(b"<sub-1@t>", b"<sub-2@t>"), [box])
        assert process_pending(reg, service_inboxes(store)) == 2
        first, second = sorted(outcomes(store))
        assert outcomes(store) == {first: "failed", second: "failed"}

        listed = civicmail(sqlite_config, "services", "failed")
        assert listed.returncode == 0 and topic.address in listed.stdout and "topic" in listed.stdout
        assert {first, second} <= {int(line.split()[0]) for line in listed.stdout.splitlines()[2:]}
        unknown = civicmail(sqlite_config, "services", "retry", "999999")
        assert unknown.returncode == 1 and "not a failed service message: 999999" in unknown.stderr

        with store.session() as s:  # fixed
            s.add(Topic(id="news", name="区县新闻", account_id=box))
        one = civicmail(sqlite_config, "services", "retry", str(first))
        assert one.returncode == 0 and f"1 message(s) pending again: {first};" in one.stdout
        assert outcomes(store) == {second: "failed"}
        assert process_pending(reg, service_inboxes(store)) == 1
        assert outcomes(store) == {first: "subscribed", second: "failed"}

        rest = civicmail(sqlite_config, "services", "retry", "--all")
        assert rest.returncode == 0 and f"pending again: {second};" in rest.stdout
        assert process_pending(reg, service_inboxes(store)) == 1
        assert outcomes(store)[second] != "failed"
        assert "no failed service mail" in civicmail(sqlite_config, "services", "failed").stdout
    finally:
        store.dispose()


def test_a_running_worker_handles_a_retried_message_within_seconds(server):  # noqa: F811
    """The retry gives the message a new MODSEQ, past the worker's watermark, and the folder's
    change wakes the running worker: no wait for its full scan (minutes)."""
    topic = add_topic(server.ctx.registry, "news", "区县新闻")
    with server.store.reader() as s:
        box = s.scalar(select(Account.id).where(Account.address == topic.address))
    with server.store.session() as s:
        s.execute(delete(Topic).where(Topic.id == "news"))
    citizen = server.citizens[0]
    server.settle()  # the worker knows the topic's INBOX
    server.send(citizen, citizen, topic.address, mail(citizen, topic.address, "订阅", "", "<sub-3@t>"))
    assert server.wait_processed(1, timeout=10) == {"failed": 1}
    server.settle()  # a round that saw nothing new: the watermark is past the failed message
    with server.store.session() as s:
        s.add(Topic(id="news", name="区县新闻", account_id=box))

    retried = civicmail(server.config, "services", "retry", "--all")
    assert retried.returncode == 0 and "1 message(s) pending again" in retried.stdout, retried.stderr
    start = time.monotonic()
    deadline = start + 5
    while server.processed() != {"subscribed": 1} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.processed() == {"subscribed": 1}, f"not handled {time.monotonic() - start:.1f} s after the retry"

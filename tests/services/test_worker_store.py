"""The worker over the store on both engines (SQLite and PostgreSQL), without the listeners:
messages are delivered into the service INBOX through the mail store with the trusted header
set exactly as SMTP submission sets it."""
from __future__ import annotations

import threading

from sqlalchemy import delete, func, select

from mailserver.services import surveys
from mailserver.services.topics import add_topic
from mailserver.services.worker import process_pending, service_inboxes
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, ServiceProcessed, Topic

from .conftest import make_citizens, mail

SURVEY = {"id": "s1", "title": "测试", "kind": "survey", "anonymous": True, "address": "survey-s1",
          "questions": [surveys.Question("q", [("A", "a"), ("B", "b")])]}


def account_id(store, address: str) -> int:
    with store.reader() as s:
        return s.scalar(select(Account.id).where(Account.address == address))


def submitted(citizen: str, to: str, body: str, n: int) -> bytes:
    return f"X-Civicmail-Authenticated: citizen={citizen}\r\n".encode() + mail(citizen, to, "vote", body, f"<m{n}@t>")


def test_each_message_is_handled_once_even_by_two_workers_at_once(registry, store):
    citizens = make_citizens(registry, 6)
    address = surveys.add_survey(registry, SURVEY)
    box = account_id(store, address)
    for n, who in enumerate(citizens * 2):  # everyone votes twice: A, then B
        deliver(store, submitted(who, address, "1A" if n < len(citizens) else "1B", n), [box])
    inboxes = service_inboxes(store)
    assert [i.kind for i in inboxes.values()] == ["survey"]

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(process_pending(registry, inboxes))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(results) == 12
    assert process_pending(registry, inboxes) == 0  # nothing left, nothing redone
    t = surveys.tally(registry, "s1")
    assert t.ballots == 6 and [r[4] for r in t.rows] == [0, 6]
    with store.reader() as s:
        outcomes = dict(s.execute(select(ServiceProcessed.outcome, func.count()).group_by(ServiceProcessed.outcome)).all())
    # a reply handled after a newer one of the same voter (the other worker) replaces nothing
    assert outcomes["vote"] == 6 and outcomes.get("vote-replaced", 0) + outcomes.get("vote-superseded", 0) == 6
    # one receipt per counted reply: nobody was answered twice for one message
    from mailserver.store.models import Folder

    with store.reader() as s:
        receipts = s.scalar(select(func.sum(Folder.message_count)).join(Account, Account.id == Folder.account_id)
                            .where(Account.address.in_(citizens), Folder.name == "INBOX"))
    assert receipts == 6 + outcomes.get("vote-replaced", 0)


def test_a_message_that_fails_is_recorded_and_the_rest_go_on(registry, store):
    citizens = make_citizens(registry, 2)
    topic = add_topic(registry, "news", "区县新闻")
    box = account_id(store, topic.address)
    with store.session() as s:  # a topic whose definition vanished: its handler cannot work
        s.execute(delete(Topic).where(Topic.id == "news"))
    deliver(store, submitted(citizens[0], topic.address, "", 1), [box])
    address = surveys.add_survey(registry, SURVEY)
    deliver(store, submitted(citizens[1], address, "1B", 2), [account_id(store, address)])
    assert process_pending(registry, service_inboxes(store)) == 2
    with store.reader() as s:
        outcomes = sorted(s.scalars(select(ServiceProcessed.outcome)))
    assert outcomes == ["failed", "vote"]
    assert process_pending(registry, service_inboxes(store)) == 0


def test_a_voter_over_quota_is_counted_without_a_receipt(registry, store):
    from sqlalchemy import update

    [citizen] = make_citizens(registry, 1)
    address = surveys.add_survey(registry, SURVEY)
    with store.session() as s:
        s.execute(update(Account).where(Account.address == citizen).values(quota_bytes=1))
    deliver(store, submitted(citizen, address, "1A", 1), [account_id(store, address)])
    assert process_pending(registry, service_inboxes(store)) == 1
    with store.reader() as s:
        assert list(s.scalars(select(ServiceProcessed.outcome))) == ["vote-over-quota"]
    assert surveys.tally(registry, "s1").ballots == 1


def test_auto_replies_are_never_answered(registry, store):
    [citizen] = make_citizens(registry, 1)
    address = surveys.add_survey(registry, SURVEY)
    raw = submitted(citizen, address, "I am on holiday until Monday.", 1).replace(
        b"Subject: vote", b"Auto-Submitted: auto-replied\r\nSubject: Out of office")
    deliver(store, raw, [account_id(store, address)])
    assert process_pending(registry, service_inboxes(store)) == 1
    with store.reader() as s:
        assert list(s.scalars(select(ServiceProcessed.outcome))) == ["ignored-automatic"]
        from mailserver.store.models import Folder

        assert s.scalar(select(Folder.message_count).join(Account, Account.id == Folder.account_id)
                        .where(Account.address == citizen, Folder.name == "INBOX")) == 0

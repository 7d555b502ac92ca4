"""A `*-contact-change` drop joins the thread of the citizen's own application."""
from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from delivery import runner
from delivery.runner import run_drop
from drophelpers import write_csv
from mailserver.store.models import Account, Application
from tests.serverkit import mailbox_raw

HEADER = ["reference", "id_number", "name", "application_number", "status", "submitted_on", "new_address",
          "new_phone"]
LIN = ("33010519790903062X", "林小红")
OUYANG = ("330109197507080777", "欧阳明辉")


def open_application(store, address: str, number: str) -> None:
    """As the services worker records a citizen's mail to the agency's application address."""
    with store.session() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == address))
        s.add(Application(number=number, agency_id="traffic-police", account_id=account_id, subject="变更联系地址",
                          status="received", root_message_id="<root.1@hz.example.cn>",
                          thread_refs="<root.1@hz.example.cn> <ack.1@hz.example.cn>"))


@pytest.mark.parametrize("pooled", [False, True], ids=["in-process", "worker-processes"])
def test_contact_change_notice_threads_under_the_application(registry, city, tmp_path, monkeypatch, pooled):
    if pooled:  # a small file through the worker processes, as a large drop goes
        monkeypatch.setattr(runner, "POOL_THRESHOLD_BYTES", 0)
    open_application(registry.store, city[LIN[0]], "2026-000001")
    drop = write_csv(tmp_path / "drop.csv", HEADER, [
        ["R1", *LIN, "2026-000001", "已办结", "2026-11-18", "示例市上城区望江路16号", ""],
        # someone else's application number: delivered, but not threaded into that conversation
        ["R2", *OUYANG, "2026-000001", "已受理", "2026-11-22", "", "13600571234"],
    ])
    result = run_drop(registry, drop, "traffic-police", "driver-contact-change")
    assert result.summary.counts["delivered"] == 2

    [mine] = mailbox_raw(registry.store, city[LIN[0]])
    msg = message_from_bytes(mine, policy=policy.default)
    assert msg["In-Reply-To"] == "<ack.1@hz.example.cn>"
    assert msg["References"].split() == ["<root.1@hz.example.cn>", "<ack.1@hz.example.cn>"]
    assert not msg.defects and msg.get_body(("plain",)) is not None
    [theirs] = mailbox_raw(registry.store, city[OUYANG[0]])
    assert b"In-Reply-To" not in theirs.split(b"\r\n\r\n", 1)[0]

    with registry.store.reader() as s:
        status, refs = s.execute(select(Application.status, Application.thread_refs)
                                 .where(Application.number == "2026-000001")).one()
    assert status == "已办结"
    assert refs.split() == ["<root.1@hz.example.cn>", "<ack.1@hz.example.cn>", msg["Message-ID"]]

    # a rerun delivers nothing and threads nothing twice
    again = run_drop(registry, drop, "traffic-police", "driver-contact-change", force=True)
    assert again.summary.counts["delivered"] == 0
    with registry.store.reader() as s:
        assert len(s.scalar(select(Application.thread_refs)).split()) == 3

"""Two nodes on one PostgreSQL running drops (issue 13, section 3): each node is a real
`civicmail drop run` process with its own store connections and its own name in the leases.

- two overlapping drops (other files, the same rows) at once: both finish, each notice once
  (the second writer's insert of a key the first committed used to crash with psycopg's
  UniqueViolation and leave its drop `failed`);
- the same file on a second node while the first runs it: refused, naming the node; once the
  first node's lease passed (it is stopped: alive but stalled) the file is taken over and finished
  exactly once, and the stalled node, woken, stops at its next batch.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from drophelpers import make_city
from mailcheck import count_inbox_messages, count_notices
from mailserver.bench.pipeline import write_drop
from mailserver.bench.util import write_citizens_csv
from mailserver.config import REPO_ROOT
from mailserver.registry.bulk import import_file
from mailserver.store.models import Drop, DropRow, Folder, Message, utcnow

ROWS = 3000


@pytest.fixture
def pg_drop(pg_registry, tmp_path):
    make_city(pg_registry)
    citizens, drop = tmp_path / "citizens.csv", tmp_path / "drop.csv"
    write_citizens_csv(citizens, ROWS, seed=13)
    assert import_file(pg_registry, citizens, None).imported == ROWS
    assert write_drop(citizens, drop) == ROWS
    return pg_registry, drop


def node(config, path, *sets: str) -> subprocess.Popen:
    """`civicmail drop run PATH` as another node would run it: a process of its own."""
    cmd = [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set", f"store.url={config.store.url}",
           "--set", "delivery.batch_size=100", "--set", "delivery.workers=1"]
    for s in sets:
        cmd += ["--set", s]
    cmd += ["drop", "run", str(path), "--agency", "traffic-police", "--notice-type", "licence-renewal"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def assert_each_notice_once(store) -> None:
    assert count_notices(store) == ROWS
    assert count_inbox_messages(store) == ROWS
    with store.reader() as s:
        per_inbox = s.execute(select(Folder.account_id, func.count(Message.id)).join(Message, Message.folder_id == Folder.id)
                              .where(Folder.name == "INBOX").group_by(Folder.account_id)).all()
    assert len(per_inbox) == ROWS and {n for _, n in per_inbox} == {1}


def test_overlapping_drops_on_two_nodes_deliver_each_notice_once(pg_drop, tmp_path):
    reg, drop = pg_drop
    header, *rows = drop.read_bytes().splitlines(keepends=True)
    backwards = tmp_path / "backwards.csv"  # the same rows, last first: the two writers meet midway
    backwards.write_bytes(header + b"".join(reversed(rows)))
    first, second = node(reg.config, drop), node(reg.config, backwards)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outputs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "UniqueViolation" not in err
    assert_each_notice_once(reg.store)
    with reg.store.reader() as s:
        drops = s.execute(select(Drop.state, Drop.rows_total, Drop.rows_delivered, Drop.owner)).all()
        duplicates = s.scalar(select(func.count(DropRow.id)).where(DropRow.status == "duplicate"))
    assert [(state, total, owner) for state, total, _, owner in drops] == [("done", ROWS, None)] * 2
    assert sum(delivered for _, _, delivered, _ in drops) == ROWS and duplicates == ROWS


def _delivered(store) -> int:
    with store.reader() as s:
        return s.scalar(select(func.count(DropRow.id)))


def test_a_live_nodes_drop_is_refused_and_a_stalled_ones_taken_over_once(pg_drop):
    reg, drop = pg_drop
    # The first node's stalled transaction is ended by the server after 3 s (as
    # store.statement_timeout does for a node that stops inside one).
    first = node(reg.config, drop, "delivery.lease_seconds=30", "store.statement_timeout=3")
    deadline = time.monotonic() + 300
    try:
        while _delivered(reg.store) < 300:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # alive, but stalled: no heartbeat, no batch
        with reg.store.reader() as s:
            drop_id, owner = s.execute(select(Drop.id, Drop.owner)).one()
        second = node(reg.config, drop)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 1, (out, err)
        assert f"drop {drop_id} of this file is running on node {owner}" in err and "Traceback" not in err

        # Its lease passes unrenewed (set here to now instead of waiting the 30 s out).
        with reg.store.session() as s:
            s.execute(update(Drop).where(Drop.id == drop_id).values(lease_until=utcnow()))
        while True:  # refused while the stalled node's transaction still holds the drop's row
            third = node(reg.config, drop)
            out, err = third.communicate(timeout=300)
            if third.returncode == 0:
                break
            assert "is running on node" in err and "Traceback" not in err, err
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert f"drop {drop_id}" in out and "(resumed)" in out
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert "Traceback" not in err
    if first.returncode != 0:  # it woke in the middle of its run: its next batch was refused
        assert "was taken over by node" in err, err
    assert_each_notice_once(reg.store)
    with reg.store.reader() as s:
        assert s.execute(select(Drop.state, Drop.rows_total, Drop.rows_delivered, Drop.owner)).all() == [
            ("done", ROWS, ROWS, None)]

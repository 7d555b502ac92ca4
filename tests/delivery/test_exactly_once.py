"""Exactly once: the same file twice, a forced rerun, and a run killed with SIGKILL halfway and
run again: every notice is in the store once, and IMAP shows each citizen one message."""
from __future__ import annotations

import imaplib
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from delivery.read import FileError
from delivery.runner import run_drop
from drophelpers import CATALOG, make_city
from mailcheck import count_inbox_messages, count_notices
from mailserver.bench.pipeline import write_drop
from mailserver.bench.util import write_citizens_csv
from mailserver.registry.bulk import import_file
from mailserver.registry.citizens import set_password
from mailserver.store.models import Account, DropRow, Folder, Message

IMAP_PASSWORD = "imap-password-1"


def test_same_file_twice_delivers_nothing_the_second_time(registry, city):
    sample = CATALOG["vehicle-inspection"].folder / "sample.csv"
    first = run_drop(registry, sample, "traffic-police", "vehicle-inspection")
    assert first.summary.counts == {"delivered": 3}
    with pytest.raises(FileError, match="already run as drop"):
        run_drop(registry, sample, "traffic-police", "vehicle-inspection")
    forced = run_drop(registry, sample, "traffic-police", "vehicle-inspection", force=True)
    assert forced.drop_id != first.drop_id
    assert forced.summary.counts == {"duplicate": 3}
    assert count_notices(registry.store) == 3 and count_inbox_messages(registry.store) == 3


def test_a_copy_under_another_name_is_a_duplicate(registry, city, tmp_path):
    """A different file (other bytes) carrying the same rows: the idempotency key decides."""
    sample = CATALOG["violation-points"].folder / "sample.csv"  # no reference column: row keys
    run_drop(registry, sample, "traffic-police", "violation-points")
    copy = tmp_path / "again.csv"
    copy.write_bytes(sample.read_bytes().replace(b"2026-11-30", b"2026/11/30"))  # same dates, other spelling
    again = run_drop(registry, copy, "traffic-police", "violation-points")
    assert again.summary.counts == {"duplicate": 3}
    assert count_notices(registry.store) == 3


def _delivered_rows(store, drop_id: int | None = None) -> int:
    with store.reader() as s:
        q = select(func.count(DropRow.id))
        return s.scalar(q.where(DropRow.drop_id == drop_id) if drop_id else q)


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            out += [int(c) for c in fh.read().split()]
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by whatever runs as PID 1, if it reaps)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def big_city(sqlite_registry, sqlite_city, tmp_path):
    citizens, drop = tmp_path / "citizens.csv", tmp_path / "drop.csv"
    write_citizens_csv(citizens, 3000, seed=3)
    report = import_file(sqlite_registry, citizens, None)
    assert report.imported == 3000
    assert write_drop(citizens, drop) == 3000
    return drop


def _run_cli(config, *args):
    cmd = [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set", "delivery.batch_size=200",
           "--set", "delivery.workers=2", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_and_delivers_each_notice_once(sqlite_registry, big_city):
    reg = sqlite_registry
    args = ("drop", "run", str(big_city), "--agency", "traffic-police", "--notice-type", "licence-renewal")
    proc = _run_cli(reg.config, *args)
    deadline = time.monotonic() + 240
    while _delivered_rows(reg.store) < 400:  # some batches committed, most not
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2  # forked render/compose workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The workers follow their parent (they hold their own copy of the job pipe, so they would
    # otherwise wait on it forever).
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "worker processes outlived the killed run"
        time.sleep(0.1)
    partial = count_notices(reg.store)
    assert 400 <= partial < 3000

    proc = _run_cli(reg.config, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "(resumed)" in out
    assert count_notices(reg.store) == 3000
    assert _delivered_rows(reg.store) == 3000
    with reg.store.reader() as s:
        per_inbox = s.execute(select(Folder.account_id, func.count(Message.id))
                              .join(Message, Message.folder_id == Folder.id)
                              .where(Folder.name == "INBOX").group_by(Folder.account_id)).all()
        assert len(per_inbox) == 3000 and {n for _, n in per_inbox} == {1}
        addresses = s.scalars(select(Account.address).where(Account.citizen_id.is_not(None))
                              .order_by(Account.id).limit(3000)).all()

    # Over IMAP too: a few of the citizens log in and find exactly one notice.
    from imap_helpers import imap_server

    with imap_server(reg.config) as port:
        for address in (addresses[10], addresses[1500], addresses[-1]):
            set_password(reg, address, IMAP_PASSWORD)
            c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
            try:
                c.login(address, IMAP_PASSWORD)
                typ, data = c.select("INBOX")
                assert typ == "OK" and data == [b"1"], (address, data)
                typ, data = c.uid("SEARCH", None, "HEADER", "X-Civicmail-Notice-Type", "licence-renewal")
                assert typ == "OK" and len(data[0].split()) == 1
            finally:
                c.logout()


@pytest.fixture
def pg_city(pg_registry):
    """A city on PostgreSQL only (the SQLite pool path is the killed-run test above)."""
    make_city(pg_registry)
    return pg_registry


def test_worker_processes_on_postgresql(pg_city, tmp_path):
    """The pool path (worker processes, each with its own engine) on the other engine."""
    from dataclasses import replace

    registry = pg_city

    citizens, drop = tmp_path / "citizens.csv", tmp_path / "drop.csv"
    write_citizens_csv(citizens, 2500, seed=5)
    assert import_file(registry, citizens, None).imported == 2500
    write_drop(citizens, drop)
    assert drop.stat().st_size >= 256 * 1024  # large enough for worker processes
    registry.config = replace(registry.config, delivery=replace(registry.config.delivery, workers=2, batch_size=1000))
    result = run_drop(registry, drop, "traffic-police", "licence-renewal")
    assert result.summary.counts == {"delivered": 2500}
    assert count_notices(registry.store) == 2500 and count_inbox_messages(registry.store) == 2500

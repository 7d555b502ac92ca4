"""`drop run` when the database becomes unavailable midway (issue 11, item 21): it retries with
backoff, then stops with one clear line and a non-zero exit (no traceback, no SQL), and the same
command run again resumes and delivers every notice exactly once."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from sqlalchemy import func, select

from mailcheck import count_notices
from mailserver.bench.pipeline import write_drop
from mailserver.bench.util import write_citizens_csv
from mailserver.registry.bulk import import_file
from mailserver.store.models import DropRow

ROWS = 2000  # batches of 100: the run cannot finish between the first commit and the lock


def _run(config, drop, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set", "delivery.batch_size=100",
           "--set", "delivery.workers=1", "--set", "store.busy_timeout=0.2", *extra,
           "drop", "run", str(drop), "--agency", "traffic-police", "--notice-type", "licence-renewal"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(store) -> int:
    with store.reader() as s:
        return s.scalar(select(func.count(DropRow.id)))


def test_a_run_stopped_by_an_outage_says_so_in_one_line_and_resumes_exactly_once(sqlite_registry, sqlite_city,
                                                                                   tmp_path):
    reg = sqlite_registry
    citizens, drop = tmp_path / "citizens.csv", tmp_path / "drop.csv"
    write_citizens_csv(citizens, ROWS, seed=5)
    assert import_file(reg, citizens, None).imported == ROWS
    assert write_drop(citizens, drop) == ROWS

    proc = _run(reg.config, drop, "--set", "delivery.store_retry_seconds=2")
    deadline = time.monotonic() + 60
    while _rows(reg.store) == 0:  # the first batch is in
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    blocker = sqlite3.connect(reg.config.data_dir / "civicmail.sqlite3", isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database from now on
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert proc.returncode == 1, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("civicmail:")]
    assert len(lines) == 1 and "stopped after" in lines[0] and "database is locked" in lines[0], err
    assert "run the same command again" in lines[0]
    assert "Traceback" not in err and "[SQL" not in err and "parameters" not in err, err
    partial = count_notices(reg.store)
    assert 0 < partial < ROWS

    # A lock that goes away while the run retries costs nothing but the wait.
    blocker = sqlite3.connect(reg.config.data_dir / "civicmail.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    proc = _run(reg.config, drop, "--set", "delivery.store_retry_seconds=60")
    try:
        warning = proc.stderr.readline()  # the command found the database locked, and waits
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert warning.startswith("store unavailable: OperationalError: database is locked; retrying in"), warning
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "(resumed)" in out
    assert count_notices(reg.store) == ROWS
    with reg.store.reader() as s:
        assert s.scalar(select(func.count(func.distinct(DropRow.line)))) == ROWS

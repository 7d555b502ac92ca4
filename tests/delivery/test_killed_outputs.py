"""A `drop run` killed with SIGKILL at random points and run again until it finishes leaves a
complete report (every row once, with its original columns and the store's status) and a complete
paper-mail export (every unmatched row once): the files are rebuilt from the store, whole."""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from drophelpers import write_csv
from mailserver.bench.util import citizen_name, citizen_number
from mailserver.registry.bulk import import_citizens
from mailserver.store.models import Drop, DropRow

ROWS = 1500
HEADER = ["reference", "id_number", "name", "licence_number", "expiry_date", "office"]


@pytest.fixture
def mixed_drop(sqlite_registry, sqlite_city, tmp_path):
    """ROWS rows in a seeded order: four in five citizens registered, the others not (paper
    letters), and every 50th row invalid. Returns (file, {line: cells}, {line: expected status})."""
    rng = random.Random(19)
    people = [(citizen_name(rng), citizen_number(i)) for i in range(ROWS)]
    registered = [p for i, p in enumerate(people) if i % 5]
    assert import_citizens(sqlite_registry, [(n, p) for n, p in enumerate(registered, start=1)], None).imported \
        == len(registered)
    rng.shuffle(people)
    rows, expected = [], {}
    for line, (name, number) in enumerate(people, start=2):
        expiry = "2027-02-30" if line % 50 == 0 else f"2027-{1 + line % 12:02d}-{1 + line % 28:02d}"
        rows.append([f"REF-{line:05d}", number, name, f"3301{line:012d}", expiry, "示例市车辆管理所"])
        expected[line] = ("invalid" if line % 50 == 0 else
                          "delivered" if (name, number) in registered else "unmatched")
    path = write_csv(tmp_path / "mixed.csv", HEADER, rows)
    return path, {line: dict(zip(HEADER, row)) for line, row in enumerate(rows, start=2)}, expected


def _run(config, drop):
    return subprocess.Popen([sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set",
                             "delivery.batch_size=100", "--set", "delivery.workers=1", "drop", "run", str(drop),
                             "--agency", "traffic-police", "--notice-type", "licence-renewal"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows_and_state(store) -> tuple[int, str | None]:
    with store.reader() as s:
        return (s.scalar(select(func.count(DropRow.id))),
                s.scalar(select(Drop.state).order_by(Drop.id.desc()).limit(1)))


def test_killed_runs_leave_complete_report_and_paper_export(sqlite_registry, mixed_drop):
    reg = sqlite_registry
    drop, cells, expected = mixed_drop
    rng = random.Random(1911)
    # random points: rows committed (a batch is 100), the last one while the files are written
    kill_points = sorted(rng.sample(range(1, ROWS), 3)) + [ROWS]
    kills = 0
    for kill_at in kill_points:
        proc = _run(reg.config, drop)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _rows_and_state(reg.store)[0] < kill_at:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.005)
        time.sleep(rng.random() * 0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 3
    if _rows_and_state(reg.store)[1] != "done":
        proc = _run(reg.config, drop)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "(resumed)" in out, err
    assert _rows_and_state(reg.store) == (ROWS, "done")

    out = reg.config.data_path("drops") / "1"
    with open(out / "report.csv", encoding="utf-8-sig", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert sorted(int(r["row"]) for r in report) == sorted(cells)  # every row, once
    for r in report:
        line = int(r["row"])
        assert r["drop_status"] == expected[line], r
        assert {k: r[k] for k in HEADER} == cells[line], r  # delivered rows' columns too (the file, read again)
    with open(out / "paper.csv", encoding="utf-8-sig", newline="") as fh:
        paper = list(csv.DictReader(fh))
    unmatched = sorted(line for line, status in expected.items() if status == "unmatched")
    assert sorted(int(p["row"]) for p in paper) == unmatched
    for p in paper:
        line = int(p["row"])
        assert (p["name"], p["id_number"]) == (cells[line]["name"], cells[line]["id_number"])
        assert cells[line]["name"] in p["text"] and p["subject"], p
    assert sorted(os.listdir(out)) == ["paper.csv", "report.csv"]  # no partial file left

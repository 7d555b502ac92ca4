"""Issue 11, item 17: a reason never carries an ID number, whatever column a clerk typed it in.
The reasons quote the cell they are about ("date must be YYYY-MM-DD: <cell>"); an ID number in
the date column used to land in clear in drop_row.reason, the report and `drop status`."""
from __future__ import annotations

import csv

from sqlalchemy import select

from dropcli import civicmail, run_drop, sample_rows
from drophelpers import write_csv
from mailserver.store.models import DropRow

ID_NUMBER = "330102196804120318"


def test_an_id_number_in_another_column_is_not_repeated_in_the_reason(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    header, (a, b, c) = sample_rows()
    date = header.index("expiry_date")
    spaced = " ".join((ID_NUMBER[:6], ID_NUMBER[6:14], ID_NUMBER[14:]))
    b[date], c[date] = ID_NUMBER, spaced  # typed into the date column, once plain, once grouped
    done = run_drop(config, write_csv(tmp_path / "drop.csv", header, [a, b, c]))
    assert done.returncode == 0, done.stderr
    assert "invalid    2" in done.stdout

    with sqlite_registry.store.reader() as s:
        reasons = dict(s.execute(select(DropRow.line, DropRow.reason).where(DropRow.status == "invalid")).all())
    assert sorted(reasons) == [3, 4]
    for reason in reasons.values():
        assert "date must be YYYY-MM-DD" in reason and "long number hidden" in reason
        assert ID_NUMBER not in reason.replace(" ", "")

    out = tmp_path / "report.csv"
    assert civicmail(config, "drop", "report", "1", "-o", str(out), "--problems").returncode == 0
    with open(out, encoding="utf-8-sig", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == 2 and all("long number hidden" in r["drop_reason"] for r in written)
    assert all(ID_NUMBER not in r["drop_reason"].replace(" ", "") for r in written)
    status = civicmail(config, "drop", "status", "1")
    assert status.returncode == 0 and ID_NUMBER not in status.stdout + status.stderr

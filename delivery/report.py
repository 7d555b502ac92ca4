"""Stage `report`: every row's outcome, as a CSV beside the drop and in the store.

The run's report CSV has the original columns plus ``status`` and ``reason`` for every row; it
and the paper-mail export hold ID numbers (they are the agency's own rows, and paper letters need
them), so both are written 0600. ``drop report`` rebuilds a report from the store: rows not
delivered keep their original columns (sealed in the store); delivered rows are listed by row
number and status only, since the store does not keep a second copy of every ID number.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from mailserver.identity.keys import IdKeyring
from mailserver.store import Store
from mailserver.store.models import Drop, DropRow

from .rowkeys import unseal_row
from .rowstate import STATUSES, RowState

#: named so as not to clash with a notice type's own "status" or "reason" field
REPORT_TAIL = ("drop_status", "drop_reason")
PAPER_HEADER = ("row", "name", "id_number", "subject", "text")


def open_private(path: Path, append: bool = False):
    """A text file only its owner can read (it holds ID numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "w", encoding="utf-8-sig" if not append or os.path.getsize(path) == 0 else "utf-8", newline="")


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def per_second(self) -> float:
        return self.counts["delivered"] / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, rows: list[RowState]) -> None:
        self.counts.update(r.status for r in rows)

    def table(self) -> list[tuple[str, str]]:
        out = [("rows", f"{self.rows:,}")]
        out += [(s, f"{self.counts[s]:,}") for s in STATUSES if s != "received"]
        out += [("time", f"{self.elapsed:.1f} s"), ("notices/s", f"{self.per_second:,.0f}")]
        return out


class ReportWriter:
    """The report CSV (every row) and the paper-mail export (unmatched rows), as rows finish."""

    def __init__(self, report_path: Path | None, paper_path: Path | None, columns: list[str],
                 append: bool = False) -> None:
        self.columns = columns
        self.report_path, self.paper_path = report_path, paper_path
        self._report = self._paper = None
        if report_path is not None:
            fresh = not append or not report_path.exists() or report_path.stat().st_size == 0
            self._report_fh = open_private(report_path, append)
            self._report = csv.writer(self._report_fh)
            if fresh:
                self._report.writerow(["row", *columns, *REPORT_TAIL])
        if paper_path is not None:
            fresh = not append or not paper_path.exists() or paper_path.stat().st_size == 0
            self._paper_fh = open_private(paper_path, append)
            self._paper = csv.writer(self._paper_fh)
            if fresh:
                self._paper.writerow(PAPER_HEADER)
        self.paper_rows = 0

    def write(self, rows: list[RowState], originals: dict[int, dict[str, str]]) -> None:
        for r in rows:
            cells = originals.get(r.line, {})
            if self._report is not None:
                self._report.writerow([r.line, *(cells.get(c, "") for c in self.columns), r.status, r.reason or ""])
            if self._paper is not None and r.paper is not None:
                self._paper.writerow([r.line, r.values.get("name", ""), r.values.get("id_number", ""), *r.paper])
                self.paper_rows += 1

    def close(self) -> None:
        for name in ("_report_fh", "_paper_fh"):
            fh = getattr(self, name, None)
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()


def stored_counts(store: Store, drop_id: int) -> Counter:
    with store.reader() as s:
        return Counter(dict(s.execute(select(DropRow.status, func.count()).where(DropRow.drop_id == drop_id)
                                      .group_by(DropRow.status)).all()))


def write_stored_report(store: Store, ring: IdKeyring, drop_id: int, path: Path, only_problems: bool = False) -> int:
    """The report of a drop from the store. Returns the number of rows written."""
    with store.reader() as s:
        drop = s.get(Drop, drop_id)
        columns = json.loads(drop.columns or "[]")
        q = select(DropRow.line, DropRow.status, DropRow.reason, DropRow.data).where(
            DropRow.drop_id == drop_id).order_by(DropRow.line)
        if only_problems:
            q = q.where(DropRow.status.not_in(("delivered", "duplicate")))
        n = 0
        with open_private(path) as fh:
            w = csv.writer(fh)
            w.writerow(["row", *columns, *REPORT_TAIL])
            for line, status, reason, data in s.execute(q).yield_per(5000):
                cells = unseal_row(ring, data) if data else {}
                w.writerow([line, *(cells.get(c, "") for c in columns), status, reason or ""])
                n += 1
    return n

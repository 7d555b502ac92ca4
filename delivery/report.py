"""Stage `report`: every row's outcome, as CSVs beside the drop and in the store.

The report CSV has the original columns plus ``drop_status`` and ``drop_reason`` for every row;
the paper-mail export has a letter for every unmatched row. Both hold ID numbers (they are the
agency's own rows, and paper letters need them), so both are written 0600.

A run writes them from the store when it ends (and a resumed run rewrites them whole), each
replaced atomically: a run killed at any point leaves no half file, and the files always agree
with the store. Rows not delivered keep their original columns sealed in the store; the columns
of delivered rows (the store keeps no second copy of every ID number) come from the drop file,
read again beside the store's rows. ``drop report`` without the file lists delivered rows by row
number and status only. A dry run writes what it saw as it goes (the store has none of it).
"""
from __future__ import annotations

import contextlib
import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import func, select

from mailserver.cells import SpreadsheetWriter
from mailserver.identity.keys import IdKeyring
from mailserver.identity.rowseal import unseal_row
from mailserver.privatefiles import replace_private
from mailserver.store import Store
from mailserver.store.driver import driver_stream
from mailserver.store.models import Drop, DropRow

from .rowstate import STATUSES, UNMATCHED, RowState
from .stagecpu import StageCpu

#: named so as not to clash with a notice type's own "status" or "reason" field
REPORT_TAIL = ("drop_status", "drop_reason")
PAPER_HEADER = ("row", "name", "id_number", "subject", "text")
#: stored rows unsealed and rendered at a time while a file is rebuilt
REBUILD_ROWS = 2000


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    #: CPU seconds per stage, in the processes and threads that ran them (``stagecpu``)
    cpu: StageCpu = field(default_factory=StageCpu)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def per_second(self) -> float:
        return self.counts["delivered"] / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, rows: list[RowState]) -> None:
        self.counts.update(r.status for r in rows)

    def counts_text(self) -> str:
        """The outcomes on one line (``delivered 3, unmatched 1``), as the serve log and the
        answer to a mailed drop give them."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))

    def table(self) -> list[tuple[str, str]]:
        out = [("rows", f"{self.rows:,}")]
        out += [(s, f"{self.counts[s]:,}") for s in STATUSES if s != "received"]
        out += [("time", f"{self.elapsed:.1f} s"), ("notices/s", f"{self.per_second:,.0f}")]
        return out


def report_row(line: int, columns: list[str], cells: dict[str, str], status: str, reason: str | None) -> list:
    return [line, *(cells.get(c, "") for c in columns), status, reason or ""]


def paper_row(r: RowState) -> list:
    assert r.paper is not None
    return [r.line, r.values.get("name", ""), r.values.get("id_number", ""), *r.paper]


class ReportWriter:
    """A dry run's report CSV (every row) and paper-mail export (unmatched rows), as rows finish;
    each file appears whole at ``close``."""

    def __init__(self, report_path: Path | None, paper_path: Path | None, columns: list[str]) -> None:
        self.columns = columns
        self._files = contextlib.ExitStack()
        self._report = self._open(report_path, ["row", *columns, *REPORT_TAIL])
        self._paper = self._open(paper_path, PAPER_HEADER)
        self.paper_rows = 0

    def _open(self, path: Path | None, header) -> SpreadsheetWriter | None:
        if path is None:
            return None
        writer = SpreadsheetWriter(self._files.enter_context(replace_private(path)))
        writer.writerow(header)
        return writer

    def write(self, rows: list[RowState], originals: dict[int, dict[str, str]]) -> None:
        for r in rows:
            if self._report is not None:
                self._report.writerow(report_row(r.line, self.columns, originals.get(r.line, {}), r.status, r.reason))
            if self._paper is not None and r.paper is not None:
                self._paper.writerow(paper_row(r))
                self.paper_rows += 1

    def close(self, failed: BaseException | None = None) -> None:
        """The files in place; after ``failed``, none (an old file of the same name stays)."""
        if failed is None:
            self._files.close()
        else:
            self._files.__exit__(type(failed), failed, failed.__traceback__)


def stored_counts(store: Store, drop_id: int) -> Counter:
    with store.reader() as s:
        return Counter(dict(s.execute(select(DropRow.status, func.count()).where(DropRow.drop_id == drop_id)
                                      .group_by(DropRow.status)).all()))


class _FileCells:
    """The drop file's rows looked up in line order, as the store's rows come (a merge: both
    streams are read once, nothing is held)."""

    def __init__(self, rows: Iterable[tuple[int, dict[str, str]]]) -> None:
        self._rows = iter(rows)
        self._next = next(self._rows, None)

    def at(self, line: int) -> dict[str, str]:
        while self._next is not None and self._next[0] < line:
            self._next = next(self._rows, None)
        return self._next[1] if self._next is not None and self._next[0] == line else {}


def report_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """A report CSV read back: (row number, original columns) per row, by position (an agency's
    own column may be called "row" too)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        records = csv.reader(fh)
        next(records, None)
        for record in records:
            yield int(record[0]), dict(zip(columns, record[1:1 + len(columns)]))


def write_stored_report(store: Store, ring: IdKeyring, drop_id: int, path: Path, only_problems: bool = False,
                        file_rows: Iterable[tuple[int, dict[str, str]]] = ()) -> int:
    """The report of a drop from the store; ``file_rows`` (the drop file's rows, as read) give the
    columns of rows the store keeps none of. Returns the number of rows written."""
    from_file = _FileCells(file_rows)
    with store.reader() as s:
        drop = s.get(Drop, drop_id)
        columns = json.loads(drop.columns or "[]")
        # through the driver: the ORM's per-row result processing cost more than the query
        sql = "SELECT line, status, reason, data FROM drop_row WHERE drop_id = ?"
        if only_problems:
            sql += " AND status NOT IN ('delivered', 'duplicate')"
        n = 0
        with replace_private(path) as fh:
            w = SpreadsheetWriter(fh)
            w.writerow(["row", *columns, *REPORT_TAIL])
            for line, status, reason, data in driver_stream(s, sql + " ORDER BY line", drop_id, size=5000):
                cells = unseal_row(ring, data) if data else from_file.at(line)
                w.writerow(report_row(line, columns, cells, status, reason))
                n += 1
    return n


def stored_unmatched(store: Store, ring: IdKeyring, drop_id: int) -> Iterator[list[RowState]]:
    """The drop's unmatched rows, with their original cells, a part at a time, in line order."""
    with store.reader() as s:
        q = select(DropRow.line, DropRow.data).where(
            DropRow.drop_id == drop_id, DropRow.status == UNMATCHED).order_by(DropRow.line)
        part: list[RowState] = []
        for line, data in s.execute(q).yield_per(REBUILD_ROWS):
            part.append(RowState(line, unseal_row(ring, data) if data else {}))
            if len(part) >= REBUILD_ROWS:
                yield part
                part = []
        if part:
            yield part


def write_stored_paper(store: Store, ring: IdKeyring, drop_id: int, path: Path,
                       letters: Callable[[list[RowState]], None]) -> int:
    """The paper-mail export of a drop from the store: a letter (``letters`` renders a part's
    rows) for every row still unmatched. Returns the number of letters."""
    n = 0
    with replace_private(path) as fh:
        w = SpreadsheetWriter(fh)
        w.writerow(PAPER_HEADER)
        for part in stored_unmatched(store, ring, drop_id):
            letters(part)
            for r in part:
                w.writerow(paper_row(r))
                n += 1
    return n

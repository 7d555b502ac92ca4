"""`civicmail drop run` and friends as an operator runs them (a real process), on the sample
licence-renewal drop of the traffic police."""
from __future__ import annotations

import csv
import subprocess

from drophelpers import CATALOG
from tests.cahelpers import CLI, civicmail  # noqa: F401  (CLI: other tests import it from here)

LICENCE = CATALOG["licence-renewal"].folder / "sample.csv"


def run_drop(config, path, *options: str, notice_type: str = "licence-renewal") -> subprocess.CompletedProcess:
    """``options`` go before the command (``--set key=value``)."""
    return civicmail(config, *options, "drop", "run", str(path), "--agency", "traffic-police",
                     "--notice-type", notice_type)


def sample_rows() -> tuple[list[str], list[list[str]]]:
    """The header and the three rows of the licence-renewal sample."""
    with open(LICENCE, encoding="utf-8", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


def report(config, drop_id: int = 1) -> dict[int, dict[str, str]]:
    """The run's report.csv by row number."""
    path = config.data_path("drops") / str(drop_id) / "report.csv"
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return {int(r["row"]): r for r in csv.DictReader(fh)}

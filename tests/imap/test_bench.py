"""`civicmail bench imap` runs end to end at a small scale (the figures themselves are in
docs/benchmarks.md; here only that every mode works and the model checker finds no error)."""
from __future__ import annotations

import re

from click.testing import CliRunner

from mailserver.bench.imap import command


def test_bench_imap_all_modes_small():
    result = CliRunner().invoke(command, ["--mode", "all", "--messages", "500", "--idle", "20", "--idle-users", "4",
                                          "--clients", "3", "--seconds", "2"])
    assert result.exit_code == 0, result.output
    assert re.search(r"UID FETCH 1:\* \(FLAGS\) of 500 messages", result.output)
    assert re.search(r"idle: 20 connections in IDLE: .* over \d+ sessions", result.output)
    m = re.search(r"stress: 3 clients, ([\d,]+) commands .* (\d+) state errors", result.output)
    assert m and int(m.group(1).replace(",", "")) > 0 and m.group(2) == "0"

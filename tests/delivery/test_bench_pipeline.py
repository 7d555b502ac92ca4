"""`civicmail bench pipeline` end to end on a hundred rows (the suite's size; the bench's default is
100,000): it delivers every row, prints its figures, and with --prepared reuses the citizens it made,
starting each run from a fresh copy."""
from __future__ import annotations

import re
import subprocess
import sys


def _bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "pipeline", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_bench_pipeline_reuses_a_prepared_directory(tmp_path):
    first = _bench("--rows", "100", "--prepared", str(tmp_path))
    assert "setup: 100 citizens registered" in first
    again = _bench("--rows", "100", "--prepared", str(tmp_path), "--set", "delivery.batch_size=30",
                   "--sign", "ec-p256")
    assert "setup: reusing the 100 citizens" in again
    for out in (first, again):
        # a fresh copy each time: every row delivered, none a duplicate of the earlier run
        line = out.strip().splitlines()[-1]
        assert re.search(r"100 rows, 100 delivered in [\d.]+ s = [\d,]+ notices/s", line), line
        assert re.search(r"PSS \d+ MiB; CPU .* ms per notice", line), line
        # CPU per stage, measured where each ran; together no more than the process tree's total
        stages = dict(re.findall(r"^  ([a-z+-]+) +([\d.]+) +[\d.]+ +[\d.]+%$", out, re.M))
        for stage in ("read", "validate", "match", "render", "compose", "sign", "structure", "write", "commit",
                      "report", "main-other", "start+exit"):
            assert stage in stages, (stage, out)
        total = float(re.search(r"^  total +([\d.]+)", out, re.M).group(1))
        assert float(stages["render"]) > 0 and float(stages["write"]) > 0
        assert sum(float(v) for v in stages.values()) <= total + 0.05, out
    assert "(signing: none)" in first and "(signing: ec-p256)" in again

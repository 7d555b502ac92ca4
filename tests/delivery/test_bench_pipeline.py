"""`civicmail bench pipeline` end to end on a hundred rows (the suite's size; the bench's default is
100,000): it delivers every row, prints its figures, and with --prepared reuses the citizens it made,
starting each run from a fresh copy; with --store-url it runs on a throwaway PostgreSQL database."""
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
    assert "(SQLite, signing: none)" in first and "(SQLite, signing: ec-p256)" in again

    # a directory prepared by an older release: its store is migrated before the copy is run
    from mailserver.config import load as load_config
    from mailserver.store import migrate, open_store

    store = open_store(load_config(tmp_path / "base" / "data" / "civicmail.toml"))
    try:
        migrate.downgrade(store, "0028")
        assert migrate.pending_revisions(store)
    finally:
        store.dispose()
    third = _bench("--rows", "100", "--prepared", str(tmp_path))
    assert "setup: reusing the 100 citizens" in third
    assert re.search(r"100 rows, 100 delivered in ", third.strip().splitlines()[-1]), third
    store = open_store(load_config(tmp_path / "base" / "data" / "civicmail.toml"))
    try:
        assert migrate.is_current(store)
    finally:
        store.dispose()


def test_bench_pipeline_runs_on_postgresql_with_store_url(tmp_path, pg_admin_url):
    from tests.conftest import pg_databases

    out = _bench("--rows", "60", "--dir", str(tmp_path), "--store-url", pg_admin_url)
    line = out.strip().splitlines()[-2]
    assert re.search(r"\(PostgreSQL, signing: none\): 60 rows, 60 delivered in [\d.]+ s", line), out
    # the citizens and notices went to PostgreSQL: the data directory holds no SQLite store
    assert (tmp_path / "data" / "civicmail.toml").exists() and not list(tmp_path.rglob("*.sqlite3*")), out
    name = re.search(r"^store: PostgreSQL database (civicmail_bench_[0-9a-f]+) on ", out, re.M).group(1)
    assert out.strip().splitlines()[-1] == f"store: database {name} dropped"
    assert name not in pg_databases()
    assert _bench_fails("--rows", "10", "--prepared", str(tmp_path / "p"), "--store-url", pg_admin_url)
    assert _bench_fails("--rows", "10", "--store-url", "sqlite:///x.db")


def _bench_fails(*args: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "pipeline", *args],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode == 2 and "--store-url" in proc.stderr

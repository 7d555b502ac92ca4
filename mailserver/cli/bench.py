"""`civicmail bench`: the measured figures (recorded in docs/benchmarks.md)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from ..bench.util import peak_rss_mib, write_citizens_csv
from .app import App
from .lazy import LazyCommand, LazyGroup

# Each area's benchmark lives beside its code in mailserver/bench/<name>.py as a click `command`,
# imported when it runs (lazy.py); the help line is its docstring's first sentence.
AREAS = {
    name: LazyCommand(f"mailserver.bench.{name}", short_help) for name, short_help in (
        ("smtp", "Start `civicmail serve` on loopback and time MESSAGES ~4 KB messages over CONCURRENCY "
                 "sessions, accepted and stored in mailboxes (SQLite, synchronous=FULL, or PostgreSQL)."),
        ("imap", "SELECT/FETCH time, SORT and THREAD time, IDLE memory and notification latency, random stress "
                 "with a model check."),
        ("pipeline", "Generate ROWS citizens and a drop of ROWS rows; time `drop run` on SQLite or PostgreSQL."),
        ("mime", "Messages per second of mime.analyze() (ENVELOPE, BODY, BODYSTRUCTURE, SEARCH text)."),
        ("services", "Time a bulletin to COUNT subscribers and COUNT survey replies through the worker."),
        ("cli", "CPU time (user + sys, best of RUNS) of `civicmail --help` and `civicmail notice list`."),
        ("oidc", "Start `civicmail serve` on loopback and time COUNT website sign-ins (code + PKCE) and IMAP "
                 "OAUTHBEARER logins."),
        ("cluster", "Start NODES `civicmail serve` nodes on one PostgreSQL; time SMTP, IDLE across nodes and a "
                    "drop through all of them, and check that nothing was lost or delivered twice."),
        ("web", "Start `civicmail serve` on loopback and time portal sign-ins and \"my notices\" page views with "
                "NOTICES notices."),
    )
}


@click.group("bench", cls=LazyGroup, lazy_commands=AREAS)
def command() -> None:
    """Benchmarks: each prints the figure an issue asks for."""


@command.command("gen-citizens")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--count", default=1_000_000, show_default=True)
@click.option("--seed", default=1, show_default=True)
def gen_citizens(file: Path, count: int, seed: int) -> None:
    """Write a CSV of COUNT generated citizens (valid, unique ID numbers) for `citizen import`."""
    started = time.monotonic()
    write_citizens_csv(file, count, seed)
    click.echo(f"{count:,} citizens written to {file} in {time.monotonic() - started:.1f} s")


@command.command("import")
@click.option("--citizens", "count", default=1_000_000, show_default=True, help="how many citizens to generate")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="data directory to use (default: a temporary one, removed afterwards)")
@click.pass_obj
def bench_import(app: App, count: int, work_dir: Path | None) -> None:
    """Generate COUNT citizens, `init` a fresh SQLite data directory and time `citizen import`."""
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-") as tmp:
        root = work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        csv_path = root / "citizens.csv"
        write_citizens_csv(csv_path, count)
        cli = [sys.executable, "-m", "mailserver.cli"]
        subprocess.run(cli + ["init", str(root / "data")], check=True, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        subprocess.run(cli + ["-c", str(root / "data" / "civicmail.toml"), "citizen", "import", str(csv_path)],
                       check=True)
        elapsed = time.monotonic() - started
        click.echo(f"bench import: {count:,} citizens in {elapsed:.1f} s = {count / elapsed:,.0f} citizens/s; "
                   f"peak RSS of the import {peak_rss_mib(children=True):.0f} MiB")


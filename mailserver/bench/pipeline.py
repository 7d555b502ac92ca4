"""`civicmail bench pipeline --rows N`: N citizens and a drop of N rows, run end to end on a
fresh data directory (SQLite, or with ``--store-url`` a throwaway PostgreSQL database); prints notices per second, the peak resident memory of the
`drop run` process tree (parent and workers, sampled from /proc), and the CPU per notice of
each stage (`drop run --stage-cpu`, measured in the threads that ran them) beside the tree's total.
With ``--sign KEY_TYPE`` the agency has a city-CA signing certificate of that key type, so every
notice is S/MIME signed.
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from delivery.stagecpu import STAGES

from .util import store_url_option, throwaway_store, write_citizens_csv

NOTICE_TYPE = "licence-renewal"
AGENCY = "traffic-police"


def write_drop(citizens_csv: Path, drop_csv: Path) -> int:
    """One licence-renewal row per generated citizen (streamed: the CSVs are never in memory)."""
    n = 0
    with open(citizens_csv, encoding="utf-8", newline="") as src, \
            open(drop_csv, "w", encoding="utf-8", newline="") as out:
        reader, writer = csv.reader(src), csv.writer(out)
        next(reader)
        writer.writerow(["reference", "id_number", "name", "licence_number", "expiry_date", "office"])
        for n, (name, number, _phone) in enumerate(reader, start=1):
            expiry = dt.date(2027, 1, 1) + dt.timedelta(days=n % 365)
            writer.writerow([f"BENCH-{n:08d}", number, name, f"3301{n:012d}", expiry.isoformat(),
                             "示例市车辆管理所滨江分所（江南大道100号）"])
    return n


def stage_seconds(out: str) -> dict[str, float]:
    """The stage table of `drop run --stage-cpu` (stage, CPU s, ms per notice) read back."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in STAGES:
            found[parts[0]] = float(parts[1])
    return found


def stage_report(seconds: dict[str, float], total: float, delivered: int) -> list[str]:
    """One line per stage (CPU s, ms per notice, share), and "start+exit": the process tree's CPU
    outside `run_drop` (interpreter start, imports, closing the store)."""
    per = max(delivered, 1)
    rows = [(stage, seconds[stage]) for stage in STAGES if stage in seconds]
    rows.append(("start+exit", max(total - sum(seconds.values()), 0.0)))
    lines = [f"{'stage':12s} {'CPU s':>8s} {'ms/notice':>10s} {'share':>6s}"]
    for stage, s in rows:
        lines.append(f"{stage:12s} {s:8.2f} {1000 * s / per:10.4f} {100 * s / max(total, 1e-9):5.1f}%")
    lines.append(f"{'total':12s} {total:8.2f} {1000 * total / per:10.4f}")
    return lines


def _tree_memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process and all its descendants, in KiB. RSS counts the pages the
    processes share (libraries) once per process; PSS divides them among the sharers."""
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes (and their own waited-for children:
    the workers of `drop run`)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kib, self.peak_pss_kib = pid, interval, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss, pss = _tree_memory_kib(self.pid)
            self.peak_kib, self.peak_pss_kib = max(self.peak_kib, rss), max(self.peak_pss_kib, pss)
            self.done.wait(self.interval)


def prepare(root: Path, rows: int, store_url: str = "") -> tuple[Path, Path]:
    """``root/data`` (init --demo, ROWS citizens imported; its store at ``store_url``, the SQLite
    file in it if empty) and ``root/drop.csv``; returns them."""
    data, drop_csv = root / "data", root / "drop.csv"
    cli = [sys.executable, "-m", "mailserver.cli"]
    store = ["--set", f"store.url={store_url}"] if store_url else []
    subprocess.run(cli + store + ["init", str(data), "--demo"], check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    citizens_csv = root / "citizens.csv"
    write_citizens_csv(citizens_csv, rows, seed=7)
    subprocess.run(cli + ["-c", str(data / "civicmail.toml"), "citizen", "import", str(citizens_csv)], check=True,
                   stdout=subprocess.DEVNULL)
    write_drop(citizens_csv, drop_csv)
    click.echo(f"setup: {rows:,} citizens registered and a {drop_csv.stat().st_size / 2**20:.0f} MiB drop "
               f"written in {time.monotonic() - started:.0f} s")
    return data, drop_csv


def prepared(root: Path, rows: int) -> tuple[Path, Path]:
    """A prepared directory kept between runs (``root/base``, made once per row count); each run
    gets a fresh copy of its data directory, so no run sees an earlier run's notices. A directory
    prepared by an older release has its store migrated to the current schema first (once: a
    store at the head is left as it is)."""
    base = root / "base"
    marker = base / "prepared-rows"
    if not (marker.exists() and marker.read_text().strip() == str(rows)):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        prepare(base, rows)
        marker.write_text(str(rows))
    else:
        subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(base / "data" / "civicmail.toml"),
                        "db", "upgrade"], check=True, stdout=subprocess.DEVNULL)
    run = root / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    shutil.copytree(base / "data", run / "data")
    click.echo(f"setup: reusing the {rows:,} citizens prepared in {base}")
    return run / "data", base / "drop.csv"


@click.command("pipeline")
@click.option("--rows", default=100_000, show_default=True, help="citizens, and rows in the drop")
@click.option("--workers", default=0, show_default=True, help="render/compose processes (0: one per core)")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="work directory (default: a temporary one, removed afterwards)")
@click.option("--prepared", "prepared_dir", type=click.Path(file_okay=False, path_type=Path),
              help="keep the generated citizens and drop here and reuse them on the next run with the "
                   "same --rows (each run still starts from a fresh copy of the data directory)")
@click.option("--set", "overrides", multiple=True, help="extra config override for `drop run` (section.key=value)")
@click.option("--sign", type=click.Choice(["none", "ec-p256", "rsa-2048"]), default="none", show_default=True,
              help="make the city CA and give the agency a signing certificate with this key type first: every "
                   "notice is then S/MIME signed (issue 14)")
@store_url_option
def command(rows: int, workers: int, work_dir: Path | None, prepared_dir: Path | None,
            overrides: tuple[str, ...], sign: str, store_url: str) -> None:
    """Generate ROWS citizens and a drop of ROWS rows; time `drop run` on SQLite or PostgreSQL."""
    if store_url and prepared_dir is not None:
        raise click.UsageError("--prepared copies a SQLite data directory: it does not go with --store-url")
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-") as tmp, throwaway_store(store_url) as url:
        if prepared_dir is not None:
            prepared_dir.mkdir(parents=True, exist_ok=True)
            data, drop_csv = prepared(prepared_dir, rows)
        else:
            root = work_dir or Path(tmp)
            root.mkdir(parents=True, exist_ok=True)
            data, drop_csv = prepare(root, rows, url)
        config = data / "civicmail.toml"
        cli = [sys.executable, "-m", "mailserver.cli"]
        extra = [arg for o in overrides for arg in ("--set", o)]
        if sign == "none":  # `init --demo` made the city CA and the agency's certificate: sign nothing
            extra += ["--set", "ca.sign_notices=false"]
        else:  # not timed: the CA and a certificate of that key type (the newest signs) before the drop
            from mailserver.identity.ca import CityCA

            if not CityCA.exists(data / "ca"):
                subprocess.run(cli + ["-c", str(config), "ca", "init"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(cli + ["-c", str(config), "--set", f"ca.agency_key_type={sign}", "ca", "issue", "agency",
                                  AGENCY], check=True, stdout=subprocess.DEVNULL)
        run = cli + ["-c", str(config), "--set", f"delivery.workers={workers}", *extra, "drop", "run", str(drop_csv),
                     "--agency", AGENCY, "--notice-type", NOTICE_TYPE, "--stage-cpu"]
        load_before = os.getloadavg()[0]
        cpu_before = _children_cpu()
        started = time.monotonic()
        proc = subprocess.Popen(run, stdout=subprocess.PIPE, text=True)
        sampler = RssSampler(proc.pid)
        sampler.start()
        out, _ = proc.communicate()
        elapsed = time.monotonic() - started
        cpu = _children_cpu() - cpu_before
        sampler.done.set()
        sampler.join()
        if proc.returncode != 0:
            click.echo(out)
            raise click.ClickException(f"drop run exited {proc.returncode}")
        delivered = next((int(line.split()[1].replace(",", "")) for line in out.splitlines()
                          if line.startswith("delivered")), 0)
        click.echo(out.rstrip())
        click.echo("CPU per stage (all processes; total from getrusage of the process tree):")
        for line in stage_report(stage_seconds(out), cpu, delivered):
            click.echo("  " + line)
        engine = "PostgreSQL" if url else "SQLite"
        click.echo(f"bench pipeline ({engine}, signing: {sign}): {rows:,} rows, {delivered:,} delivered in {elapsed:.1f} s = "
                   f"{delivered / elapsed:,.0f} notices/s end to end (process start to exit); "
                   f"peak memory of drop run + workers: RSS {sampler.peak_kib / 1024:.0f} MiB, "
                   f"PSS {sampler.peak_pss_kib / 1024:.0f} MiB; CPU (user + sys, all processes) {cpu:.1f} s = "
                   f"{1000 * cpu / max(delivered, 1):.3f} ms per notice; load average {load_before:.1f} at start, "
                   f"{os.getloadavg()[0]:.1f} at end")

"""`civicmail bench cli`: what a command costs before it does anything (issue 16 item 5).

Each command runs as its own process, as an operator runs it; the figure is that child's CPU time
(user + sys, from the kernel's accounting of waited-for children), the best of RUNS, so a busy
machine inflates it less than wall time. Bar: under 0.3 s for `--help` and `notice list`, which
import neither SQLAlchemy nor Alembic (mailserver/cli/lazy.py).
"""
from __future__ import annotations

import resource
import subprocess
import sys

import click

from ..errors import UserError

BAR_SECONDS = 0.3


def child_cpu_seconds(argv: list[str]) -> float:
    """User + system CPU seconds of one run of argv (its output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise UserError(f"{' '.join(argv)} exited with {done.returncode}: "
                        f"{done.stderr.decode(errors='replace').strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@click.command("cli")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 100), help="runs of each command")
@click.pass_obj
def command(app, runs: int) -> None:
    """CPU time (user + sys, best of RUNS) of `civicmail --help` and `civicmail notice list`."""
    # the same configuration as this run, so `notice list` reads the operator's templates
    options = (["-c", app.config_path] if app.config_path else []) + [a for o in app.overrides for a in ("--set", o)]
    civicmail = [sys.executable, "-m", "mailserver.cli", *options]
    cases = (("python -c pass (interpreter start, the floor)", [sys.executable, "-c", "pass"], None),
             ("civicmail --help", civicmail + ["--help"], BAR_SECONDS),
             ("civicmail notice list", civicmail + ["notice", "list"], BAR_SECONDS))
    click.echo(f"bench cli: CPU (user + sys) of one run, best of {runs}")
    for label, argv, bar in cases:
        best = min(child_cpu_seconds(argv) for _ in range(runs))
        verdict = "" if bar is None else f"   bar {bar} s: {'met' if best < bar else 'NOT MET'}"
        click.echo(f"  {label:<46} {best:6.3f} s{verdict}")

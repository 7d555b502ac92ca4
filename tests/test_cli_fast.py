"""The CLI imports a command's dependencies only when that command runs (issue 16 item 5).

`civicmail --help` used to import SQLAlchemy, Alembic and psycopg (1.4 s of CPU) for nothing. The
checks here are on what gets imported, not on timing, so a loaded machine cannot make them flaky;
`civicmail bench cli` prints the CPU figures (docs/benchmarks.md).
"""
from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys

import click
import pytest

import mailserver.bench
import mailserver.cli
from mailserver.cli import COMMANDS, cli
from mailserver.cli.bench import AREAS
from mailserver.cli.lazy import LazyGroup
from mailserver.config import REPO_ROOT

HEAVY = ("sqlalchemy", "alembic", "psycopg", "aiosmtpd")

# Runs the real CLI entry point in a fresh interpreter, then names the heavy packages it imported.
PROBE = ("import sys\n"
         "from mailserver.cli import main\n"
         "rc = main(sys.argv[1:])\n"
         f"heavy = sorted({{m.partition('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
         "print('imported:', ','.join(heavy) or '-', file=sys.stderr)\n"
         "sys.exit(rc)\n")


def run_probe(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("args", [("--help",), ("notice", "list"), ("notice", "--help"), ("bench", "--help")])
def test_light_commands_import_no_database_code(args, tmp_path):
    done = run_probe(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "imported: -"
    assert "Commands:" in done.stdout or "traffic-police" in done.stdout


def test_notice_list_lists_every_notice_type(tmp_path):
    done = run_probe("notice", "list", cwd=tmp_path)
    listed = {line.split()[0] for line in done.stdout.splitlines()[2:]}
    assert listed == {p.name for p in (REPO_ROOT / "templates").iterdir() if (p / "notice.toml").exists()}


def test_a_command_that_needs_the_store_still_finds_it(tmp_path):
    """The probe sees the import happen when a command needs it (so the check above can fail)."""
    done = run_probe("--set", "passwords.memory_cost_kib=1024", "init", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sqlalchemy" in done.stderr.splitlines()[-1] and "alembic" in done.stderr.splitlines()[-1]


def _commands_in(package) -> dict[str, click.Command]:
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):  # __main__ runs the CLI
            continue
        command = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "command", None)
        if isinstance(command, click.Command):
            found[command.name] = command
    return found


def _first_sentence(text: str) -> str:
    return click.Command("x", help=text).get_short_help_str(limit=10_000)


@pytest.mark.parametrize("table, package", [(COMMANDS, mailserver.cli), (AREAS, mailserver.bench)],
                         ids=["civicmail", "civicmail bench"])
def test_the_help_table_names_every_command_with_its_own_docstring(table, package):
    commands = _commands_in(package)
    assert set(table) == set(commands)
    for name, command in commands.items():
        assert table[name].target == command.callback.__module__
        assert _first_sentence(table[name].short_help) == _first_sentence(command.help), name


def test_help_from_the_table_is_what_the_commands_would_print():
    # a fresh group (another test may have loaded commands into `cli`): its help comes from the table
    fresh = LazyGroup("civicmail", params=cli.params, help=cli.help, lazy_commands=COMMANDS)
    lazy = fresh.get_help(click.Context(fresh, info_name="civicmail"))
    assert not fresh.commands
    eager = click.Group("civicmail", params=cli.params, help=cli.help)
    for name in fresh.list_commands(click.Context(fresh)):
        eager.add_command(fresh.get_command(click.Context(fresh), name))
    assert "bench        Benchmarks: each prints the figure an issue asks for." in lazy
    assert lazy == eager.get_help(click.Context(eager, info_name="civicmail"))


def test_bench_cli_prints_the_cpu_time_of_each_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "cli", "--runs", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"^  (civicmail [a-z -]+?)\s+(\d+\.\d{3}) s", done.stdout, re.M))
    assert set(figures) == {"civicmail --help", "civicmail notice list"}
    assert all(0 < float(v) < 60 for v in figures.values())
    assert "bar 0.3 s" in done.stdout

"""`civicmail bench imap` runs end to end at a small scale (the figures themselves are in
docs/benchmarks.md; here only that every mode works and the model checker finds no error)."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from mailserver.bench.imap import command


def test_bench_imap_all_modes_small():
    # the suite's size (the bench's own defaults are 100,000 messages and 10,000 connections)
    result = CliRunner().invoke(command, ["--mode", "all", "--messages", "200", "--idle", "8", "--idle-users", "2",
                                          "--clients", "2", "--seconds", "1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"UID FETCH 1:\* \(FLAGS\) of 200 messages", result.output)
    for command_text in (r"UID SORT \(REVERSE DATE\) UTF-8 ALL", r"UID THREAD REFERENCES UTF-8 ALL"):
        assert len(re.findall(rf"sort: {command_text} of 200 messages \d+ ms", result.output)) == 3
    assert re.search(r"idle: 8 connections in IDLE: .* over \d+ sessions", result.output)
    m = re.search(r"stress: 2 clients, ([\d,]+) commands .* (\d+) state errors", result.output)
    assert m and int(m.group(1).replace(",", "")) > 0 and m.group(2) == "0"


def test_bench_imap_stress_with_the_real_hash_runs_again_against_the_same_server():
    """--real-hash gives the users the product's argon2id; --runs repeats the stress against the one
    server with fresh users, printing its memory after each run; --set configures the server."""
    result = CliRunner().invoke(command, ["--mode", "stress", "--clients", "2", "--seconds", "1", "--runs", "2",
                                          "--real-hash", "--set", "login.cache_size=0"])
    assert result.exit_code == 0, result.output
    assert "passwords hashed with the product's argon2id" in result.output
    runs = re.findall(r"stress: 2 clients, ([\d,]+) commands .* (\d+) state errors .* RSS \d+ MiB after run (\d)",
                      result.output)
    assert [(n != "0", errors, run) for n, errors, run in runs] == [(True, "0", "1"), (True, "0", "2")], result.output
    assert CliRunner().invoke(command, ["--mode", "stress", "--seconds", "1", "--clients", "1",
                                        "--set", "login.cache_size=-1"]).exit_code != 0


def test_bench_imap_stress_connects_to_a_running_server(tmp_path):
    """`--connect` (what bin/bench-dovecot uses against Dovecot) drives any server with the same
    client mix and model check; here our own server, run the way the bench runs it."""
    from mailserver.bench.imap import ServerChild, prepare_data

    prepare_data(tmp_path, 3, 0)  # u0, u1, u2: --connect logs in as u1..uN
    server = ServerChild(tmp_path)
    try:
        result = CliRunner().invoke(command, ["--mode", "stress", "--clients", "2", "--seconds", "1",
                                              "--connect", f"127.0.0.1:{server.port}"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    m = re.search(r"stress against 127\.0\.0\.1:\d+: 2 clients, ([\d,]+) commands .* (\d+) state errors", result.output)
    assert m and int(m.group(1).replace(",", "")) > 0 and m.group(2) == "0", result.output


def test_bench_imap_connect_wants_stress_mode_and_host_port():
    assert CliRunner().invoke(command, ["--mode", "all", "--connect", "127.0.0.1:1"]).exit_code == 2
    assert CliRunner().invoke(command, ["--mode", "stress", "--connect", "nohost"]).exit_code == 2


@pytest.mark.parametrize("settings", [(), ("--set", "server.workers=2")], ids=["one process", "workers=2"])
def test_bench_imap_stress_keeps_sessions_open_with_issue_12s_mix(settings):
    """--keep-sessions: one LOGIN per client for the whole run, each cycle LIST, STATUS, SELECT,
    FETCH of flags and of a whole 4 KB message, STORE of flags and keywords, STORE +FLAGS
    \\Deleted, EXPUNGE and APPEND, every answer checked against the model. Through the real CLI;
    with server.workers=2 the first server child hands one session to the other (imap/handoff.py)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "imap", "--mode", "stress",
                          "--keep-sessions", "--clients", "2", "--seconds", "2", *settings],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    m = re.search(r"stress \(kept sessions\): 2 clients, ([\d,]+) commands .* (\d+) LOGINs, (\d+) state errors",
                  run.stdout)
    assert m, run.stdout + run.stderr
    # two sessions only, yet many cycles of nine commands each: the sessions were kept
    assert m.group(2) == "2" and int(m.group(1).replace(",", "")) > 40 and m.group(3) == "0", run.stdout + run.stderr
    if settings:  # each process served a session: both used CPU
        split = re.search(r"\(([\d.]+) \+ ([\d.]+) s per process\)", run.stdout)
        assert split and float(split.group(1)) > 0 and float(split.group(2)) > 0, run.stdout


def test_bench_imap_stress_runs_on_postgresql_with_store_url(pg_admin_url):
    from tests.conftest import pg_databases

    result = CliRunner().invoke(command, ["--mode", "stress", "--clients", "2", "--seconds", "1",
                                          "--store-url", pg_admin_url])
    assert result.exit_code == 0, result.output
    assert re.search(r"prepared 3 users and 0 messages on PostgreSQL", result.output), result.output
    m = re.search(r"stress: 2 clients, ([\d,]+) commands .* (\d+) state errors", result.output)
    assert m and int(m.group(1).replace(",", "")) > 0 and m.group(2) == "0", result.output
    # the database's own CPU per command (its backends', read from /proc: the server is on this machine)
    cpu = re.search(r"stress: PostgreSQL backends' CPU ([\d.]+) s = ([\d.]+) ms per command \((\d+) backends",
                    result.output)
    assert cpu and float(cpu.group(2)) > 0 and int(cpu.group(3)) > 0, result.output
    name = re.search(r"^store: PostgreSQL database (civicmail_bench_[0-9a-f]+) on ", result.output, re.M).group(1)
    assert f"store: database {name} dropped" in result.output and name not in pg_databases()
    assert CliRunner().invoke(command, ["--mode", "stress", "--connect", "127.0.0.1:1",
                                        "--store-url", pg_admin_url]).exit_code == 2

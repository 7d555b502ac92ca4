"""The data directory holds all mail, password hashes, phone numbers and keys (issue 11, item 16):
`civicmail init` makes it closed to others, what `serve` writes stays so, and `serve` warns of (or
with --strict refuses) a data directory others can read."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from mailserver.bench.smtp import PORT_ZERO, start_server, stop_server

CLI = [sys.executable, "-m", "mailserver.cli"]
FAST_KDF = ("--set", "passwords.memory_cost_kib=1024", "--set", "passwords.time_cost=1")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _init(tmp_path: Path) -> Path:
    data = tmp_path / "city"
    done = subprocess.run(CLI + [*FAST_KDF, "init", str(data)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return data


def test_init_makes_the_data_directory_closed_to_others_and_serve_keeps_it(tmp_path):
    old = os.umask(0o022)  # as a default shell: civicmail must not depend on the caller's umask
    try:
        data = _init(tmp_path)
    finally:
        os.umask(old)
    assert _mode(data) == 0o750
    for path in [data, *data.rglob("*")]:
        assert _mode(path) & 0o027 == 0, f"{path} is {_mode(path):04o}"
    for secret in ("civicmail.sqlite3", "keys/idnumber.json", "tls/key.pem", "dkim/civic1.key"):
        assert _mode(data / secret) == 0o600, secret
    assert _mode(data / "tls") == 0o750 and _mode(data / "keys") == 0o700

    proc, _, _, log = start_server(data / "civicmail.toml")  # the WAL exists while it serves
    try:
        for wal in ("civicmail.sqlite3-wal", "civicmail.sqlite3-shm"):
            assert _mode(data / wal) == 0o600, wal
        assert not [line for line in log if "should be" in line], log
    finally:
        assert stop_server(proc, log) == 0


def test_serve_warns_of_an_open_data_directory_and_refuses_with_strict(tmp_path):
    data = _init(tmp_path)
    os.chmod(data, 0o755)
    os.chmod(data / "civicmail.sqlite3", 0o644)
    sets = [a for o in PORT_ZERO for a in ("--set", o)]
    refused = subprocess.run(CLI + ["-c", str(data / "civicmail.toml"), *sets, "serve", "--strict"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert f"{data / 'civicmail.sqlite3'} is mode 0644" in refused.stderr
    assert "civicmail: 2 path(s) in the data directory" in refused.stderr and "Traceback" not in refused.stderr
    assert "civicmail ready" not in refused.stderr

    proc, _, _, log = start_server(data / "civicmail.toml")  # without --strict: it warns and serves
    try:
        warnings = [line for line in log if "should be" in line]
        assert len(warnings) == 2 and any(f"{data} is mode 0755" in line for line in warnings), log
    finally:
        assert stop_server(proc, log) == 0

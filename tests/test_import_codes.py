"""No account without its activation letter: `citizen import` puts a batch's codes on disk before
the batch commits, a rerun keeps them and drops the lines of batches that never committed, and
`citizen reissue-code` gives pending accounts fresh codes (the old ones stop working)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from mailserver.bench.util import write_citizens_csv
from mailserver.errors import AuthenticationFailed
from mailserver.identity.passwords import normalize_code
from mailserver.registry import Registry
from mailserver.registry.citizens import ACTIVATION, activate
from mailserver.store.models import Account, AuditLog

BATCH = 5000  # registry/bulk.py's batch


def civicmail(config, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(config, *args), input=stdin, capture_output=True, text=True, timeout=180)


def _cli(config, *args: str) -> list[str]:
    # the test's store (PostgreSQL is an override, not in the file)
    return [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set",
            f'store.url="{config.store_url}"', *args]


def read_codes(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def pending_hashes(reg: Registry) -> dict[str, bytes]:
    with reg.store.reader() as s:
        return dict(s.execute(select(Account.address, Account.activation_hash).where(Account.state == "pending")).all())


def assert_every_pending_account_has_its_code(reg: Registry, codes_path) -> list[dict[str, str]]:
    """Each pending account: exactly one line, whose code opens it; no other line."""
    rows = read_codes(codes_path)
    hashes = pending_hashes(reg)
    assert len(rows) == len({r["address"] for r in rows}), "an address has two lines"
    assert {r["address"] for r in rows} == set(hashes)
    for r in rows:
        assert reg.keyring.secret_hash(ACTIVATION, normalize_code(r["activation_code"])) == hashes[r["address"]], r
    return rows


def _wait(what, condition, proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _lines(path) -> int:
    return sum(1 for _ in open(path, encoding="utf-8")) - 1 if path.exists() else 0


def _accounts(reg: Registry) -> int:
    with reg.store.reader() as s:
        return s.scalar(select(func.count(Account.id)).where(Account.citizen_id.is_not(None)))


def test_import_whose_codes_cannot_be_written_registers_nothing(sqlite_registry, tmp_path):
    """A full disk where the codes go: the batch does not commit (on main it did, and its
    accounts had a code hash and no code anywhere); the rerun registers them with their codes."""
    reg = sqlite_registry
    people = tmp_path / "people.csv"
    write_citizens_csv(people, 40, seed=20)
    full = civicmail(reg.config, "citizen", "import", str(people), "--codes", "/dev/full")
    assert _accounts(reg) == 0
    assert full.returncode == 1
    assert "cannot write the activation codes to /dev/full" in full.stderr and "Traceback" not in full.stderr
    codes = tmp_path / "people.csv.codes.csv"
    again = civicmail(reg.config, "citizen", "import", str(people))
    assert again.returncode == 0, again.stderr
    assert "imported 40, already registered 0" in again.stdout
    assert len(assert_every_pending_account_has_its_code(reg, codes)) == 40


def test_killed_import_keeps_every_code(pg_registry, tmp_path):
    """Killed while a batch's commit waits (its codes already on disk), then killed after its
    first batch committed, then run to the end: every pending account has its one working code."""
    reg = pg_registry
    people, codes = tmp_path / "people.csv", tmp_path / "people.csv.codes.csv"
    write_citizens_csv(people, BATCH + 2000, seed=21)
    args = ("citizen", "import", str(people))

    # 1. Another transaction holds the audit log: the first batch's commit waits on it.
    blocker = create_engine(reg.config.store_url)
    with blocker.connect() as conn:
        conn.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        proc = subprocess.Popen(_cli(reg.config, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait("the codes of a batch are on disk before the batch commits",
              lambda: _lines(codes) >= BATCH, proc, seconds=120)
        _kill(proc)
        conn.rollback()
    blocker.dispose()
    assert _accounts(reg) == 0 and _lines(codes) == BATCH  # codes that open nothing, for now

    # 2. Killed once its first batch has committed.
    proc = subprocess.Popen(_cli(reg.config, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait("a first batch commits", lambda: _accounts(reg) >= BATCH, proc)
    _kill(proc)
    committed = _accounts(reg)
    assert BATCH <= committed < BATCH + 2000

    # 3. The rerun: those are already registered, and their codes are still there; the lines of
    # the batch that never committed are gone.
    done = civicmail(reg.config, *args)
    assert done.returncode == 0, done.stderr
    assert f"already registered {committed}" in done.stdout
    assert "lines of an interrupted run dropped" in done.stdout
    rows = assert_every_pending_account_has_its_code(reg, codes)
    assert len(rows) == BATCH + 2000

    # A code from the killed run's committed batch opens its account.
    first = rows[0]
    opened = civicmail(reg.config, "citizen", "activate", first["address"], "--code", first["activation_code"],
                       "--password-stdin", stdin="a new password 1\n")
    assert opened.returncode == 0, opened.stderr


def test_reissue_code_for_addresses_and_for_an_import_file(sqlite_registry, tmp_path):
    reg = sqlite_registry
    people = tmp_path / "people.csv"
    write_citizens_csv(people, 30, seed=22)
    assert civicmail(reg.config, "citizen", "import", str(people)).returncode == 0
    codes = tmp_path / "people.csv.codes.csv"
    imported = read_codes(codes)
    first, second, third = imported[:3]

    # An active account is refused, and then nothing is issued to the others named with it.
    activate(reg, first["address"], first["activation_code"], "a new password 1")
    refused = civicmail(reg.config, "citizen", "reissue-code", second["address"], first["address"],
                        "nobody@hz.example.cn")
    assert refused.returncode == 1
    assert f"{first['address']} is active: an activation code would not open it" in refused.stderr
    assert "nobody@hz.example.cn: no citizen account" in refused.stderr
    assert pending_hashes(reg)[second["address"]] == reg.keyring.secret_hash(
        ACTIVATION, normalize_code(second["activation_code"]))

    # By address: the new code on standard output (CSV, as the import writes it); the old one dead.
    issued = civicmail(reg.config, "citizen", "reissue-code", second["address"])
    assert issued.returncode == 0, issued.stderr
    (new,) = csv.DictReader(issued.stdout.splitlines())
    assert new["address"] == second["address"] and new["activation_code"] != second["activation_code"]
    with pytest.raises(AuthenticationFailed):
        activate(reg, second["address"], second["activation_code"], "a new password 2")
    assert civicmail(reg.config, "citizen", "activate", second["address"], "--code", new["activation_code"],
                     "--password-stdin", stdin="a new password 2\n").returncode == 0

    # For the whole import file: the 28 still pending get fresh codes in the import's codes file,
    # whose old lines for them are dropped; the two active accounts keep their lines.
    whole = civicmail(reg.config, "citizen", "reissue-code", "--file", str(people))
    assert whole.returncode == 0, whole.stderr
    assert "codes issued 28, not waiting for activation 2, not registered 0" in whole.stdout
    rows = read_codes(codes)
    assert sorted(r["address"] for r in rows) == sorted(r["address"] for r in imported)  # one line each
    by_address = {r["address"]: r for r in rows}
    assert by_address[third["address"]]["activation_code"] != third["activation_code"]
    hashes = pending_hashes(reg)
    assert len(hashes) == 28
    for address, code_hash in hashes.items():
        assert reg.keyring.secret_hash(ACTIVATION, normalize_code(by_address[address]["activation_code"])) == code_hash

    with reg.store.reader() as s:
        audited = s.scalars(select(AuditLog.detail).where(AuditLog.action == "citizen.reissue-code")).all()
    assert sorted(audited) == sorted([second["address"], *hashes])

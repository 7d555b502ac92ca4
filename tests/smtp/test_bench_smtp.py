"""`civicmail bench smtp` end to end at the suite's size (the bench's default is 10,000 messages),
on SQLite and with --store-url on a throwaway PostgreSQL database: every message accepted is
counted back from the store the server wrote to."""
from __future__ import annotations

import re

from click.testing import CliRunner

from mailserver.bench.smtp import command
from tests.conftest import pg_databases


def _run(*args: str) -> str:
    result = CliRunner().invoke(command, ["--messages", "40", "--concurrency", "4", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_bench_smtp_on_sqlite(tmp_path):
    out = _run("--dir", str(tmp_path))
    assert re.search(r"bench smtp \(SQLite, bodies in the local blob store\): 40 messages .* 40 accepted, 40 stored",
                     out), out
    assert (tmp_path / "data" / "civicmail.sqlite3").exists()
    assert len([p for p in (tmp_path / "data" / "blobs").glob("??/??/*")]) == 40  # each message has its own body


def test_bench_smtp_with_bodies_in_the_database(tmp_path):
    out = _run("--dir", str(tmp_path), "--bodies", "database")
    assert re.search(r"bench smtp \(SQLite, bodies in the database\): 40 messages .* 40 accepted, 40 stored", out), out
    assert not list((tmp_path / "data" / "blobs").glob("??/??/*"))


def test_bench_smtp_runs_on_postgresql_with_store_url(tmp_path, pg_admin_url):
    out = _run("--dir", str(tmp_path), "--store-url", pg_admin_url)
    assert re.search(r"bench smtp \(PostgreSQL, bodies in the local blob store\): 40 messages .* 40 accepted, "
                     r"40 stored", out), out
    assert not list(tmp_path.rglob("*.sqlite3*")), out  # the server stored them in PostgreSQL
    name = re.search(r"^store: PostgreSQL database (civicmail_bench_[0-9a-f]+) on ", out, re.M).group(1)
    assert f"store: database {name} dropped" in out and name not in pg_databases()

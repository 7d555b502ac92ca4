"""Fixtures, not layers: a data directory, a store on SQLite or PostgreSQL, a registry.

PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth): each creates a throwaway
database and drops it. Where no server answers they are skipped, with the reason shown.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from hypothesis import settings

from mailserver import config as config_mod
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.store import Store, open_store

# Hypothesis explores new examples on every local run; under CI (CI=true) it replays the same
# derandomized ones, so a pass or a fail there depends on the commit alone. A failure a local run
# finds is printed with its example (and kept in .hypothesis/) to become a fix and a test.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Every child a test starts (`civicmail serve`, the CLI) prints the Python stack of each thread if it
# dies of a fatal signal, so a crash in a C extension reaches the test's log with where it happened.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

# A test of the abuse harness (tests/abuse.py) asserts that a bystander is answered within 1 s while an
# abuse runs: it is marked `serial`, and .ci/run runs those alone after the parallel group, so another
# xdist worker sharing the two cores cannot make it late. Others with a deadline carry the mark by hand.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests import abuse  # here, not at the top: tests/abuse.py imports this module

    harness = {name: getattr(abuse, name) for name in ("city", "city_factory")}
    for item in items:
        module = getattr(item, "module", None)  # the harness's fixtures are imported by name into it
        if any(name in getattr(item, "fixturenames", ()) and getattr(module, name, None) is fixture
               for name, fixture in harness.items()):
            item.add_marker(pytest.mark.serial)


PG_ADMIN = os.environ.get("CIVICMAIL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

# argon2 at its production cost makes every login ~20 ms; tests that are not about hashing
# use a cheaper setting (the hashing tests use the defaults).
FAST_KDF = ("passwords.memory_cost_kib=1024", "passwords.time_cost=1")


def _pg_admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")


_pg_state: dict[str, str | None] = {}


def pg_unavailable() -> str | None:
    """None if the PostgreSQL test server answers, else why not."""
    if "reason" not in _pg_state:
        try:
            engine = _pg_admin_engine()
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            engine.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # any failure to connect means: skip, and say why
            _pg_state["reason"] = f"no PostgreSQL server at {PG_ADMIN}: {exc.__class__.__name__}: {str(exc)[:200]}"
    return _pg_state["reason"]


@pytest.fixture
def pg_admin_url():
    """The PostgreSQL test server's URL (its maintenance database), for what makes its own
    databases there (the benchmarks' --store-url)."""
    reason = pg_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must run the PostgreSQL tests
        pytest.skip(reason)
    return PG_ADMIN


def pg_databases() -> set[str]:
    """The names of the databases on the PostgreSQL test server."""
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.exec_driver_sql("SELECT datname FROM pg_database")}
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg_admin_url):
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"civicmail_test_{secrets.token_hex(6)}"
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each store test runs on both engines."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'civicmail.sqlite3'}"
    else:
        yield request.getfixturevalue("pg_url")


def make_config(data_dir: Path, *overrides: str, store_url: str | None = None, fast_kdf: bool = True):
    """Write a civicmail.toml into data_dir (test domain hz.example.cn) and load it."""
    from mailserver.provision import write_config

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "civicmail.toml"
    if not path.exists():
        write_config(path, "hz.example.cn", "mail.hz.example.cn")
    extra = list(FAST_KDF if fast_kdf else ()) + list(overrides)
    if store_url:
        extra.append(f'store.url="{store_url}"')
    return config_mod.load(path, tuple(extra))


@pytest.fixture
def config(tmp_path, store_url):
    """A prepared data directory (keys, migrated database, TLS, DKIM) on SQLite or PostgreSQL."""
    cfg = make_config(tmp_path / "data", store_url=store_url)
    prepare(cfg)
    return cfg


@pytest.fixture
def sqlite_config(tmp_path):
    """The same, on the embedded SQLite store only (for tests about protocols, not engines)."""
    cfg = make_config(tmp_path / "data")
    prepare(cfg)
    return cfg


@pytest.fixture
def store(config):
    s = open_store(config)
    yield s
    s.dispose()


@pytest.fixture
def registry(config, store):
    return Registry(config, store)


@pytest.fixture
def sqlite_registry(sqlite_config):
    store = open_store(sqlite_config)
    yield Registry(sqlite_config, store)
    store.dispose()


@pytest.fixture
def pg_registry(tmp_path, pg_url):
    """A registry on PostgreSQL only."""
    config = make_config(tmp_path / "pg", store_url=pg_url)
    prepare(config)
    store = open_store(config)
    yield Registry(config, store)
    store.dispose()


# -- S3: moto's server, shared by the blob store's tests and backup's -------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server: a stand-in for a real S3-compatible store (none installs from the package
    registries here), on a free port, speaking the S3 protocol over HTTP."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)

"""Schema migrations (Alembic), run programmatically: no alembic.ini to find."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .db import Store

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _migrating(store: Store) -> Iterator:
    """A connection in one transaction for a migration.

    On SQLite, Alembic's batch mode changes a table by copying it to a new one, dropping the old
    and renaming: with foreign keys on, that DROP deletes (ON DELETE CASCADE) every row that
    points at the table, e.g. every message of a rebuilt folder table. So foreign keys are off
    while migrating (the pragma is a no-op inside a transaction: it is set before BEGIN) and are
    checked as a whole before the COMMIT instead."""
    with store.engine.connect() as conn:
        sqlite = store.dialect == "sqlite"
        dbapi = conn.connection.dbapi_connection  # autocommit mode (db.py): outside any transaction
        if sqlite:
            dbapi.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left {len(broken)} rows with a dangling foreign key "
                                           f"(first: {tuple(broken[0])}); rolled back")
        finally:
            if sqlite:
                dbapi.execute("PRAGMA foreign_keys=ON")


def upgrade(store: Store, revision: str = "head") -> None:
    with _migrating(store) as conn:
        command.upgrade(_alembic_config(conn), revision)


def downgrade(store: Store, revision: str) -> None:
    """Back to ``revision``. Data outside what the steps drop is kept (tests/test_migrations.py)."""
    with _migrating(store) as conn:
        command.downgrade(_alembic_config(conn), revision)


def current_revision(store: Store) -> str | None:
    # a read: on SQLite it must not wait for (or take) the write lock, as every command asks it
    with store.engine.connect().execution_options(civicmail_readonly=True) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _scripts() -> ScriptDirectory:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    return _scripts().get_current_head()


def pending_revisions(store: Store) -> list[str] | None:
    """The migrations ``db upgrade`` would run, newest first (all of them for an empty database);
    None if the database is at a revision this civicmail does not know (a newer one migrated it)."""
    from alembic.script.revision import ResolutionError

    try:
        return [r.revision for r in _scripts().iterate_revisions("heads", current_revision(store) or "base")]
    except ResolutionError:
        return None


def is_current(store: Store) -> bool:
    return current_revision(store) == head_revision()


"""Schema migrations (Alembic), run programmatically: no alembic.ini to find."""
from __future__ import annotations

from pathlib import Path

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


def upgrade(store: Store, revision: str = "head") -> None:
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def is_current(store: Store) -> bool:
    return current_revision(store) == head_revision()

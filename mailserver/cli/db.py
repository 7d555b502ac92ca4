"""`civicmail db`: the schema."""
from __future__ import annotations

import click

from ..store import migrate
from .app import App


@click.group("db")
def command() -> None:
    """Database schema: upgrade, current revision."""


@command.command("upgrade")
@click.pass_obj
def upgrade(app: App) -> None:
    """Create or migrate the database to the current schema."""
    before = migrate.current_revision(app.store)
    migrate.upgrade(app.store)
    after = migrate.current_revision(app.store)
    click.echo(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    from ..registry import Registry
    from ..registry.oidc import ensure_provider

    for line in ensure_provider(Registry(app.config, app.store)):  # the portal: no operator step
        click.echo(line)


@command.command("current")
@click.pass_obj
def current(app: App) -> None:
    """Print the database's schema revision and the newest one."""
    click.echo(f"database {migrate.current_revision(app.store) or 'empty'}, newest {migrate.head_revision()}")

"""`civicmail serve`: run the servers."""
from __future__ import annotations

import asyncio

import click

from ..logs import setup_logging
from ..server import ServerContext, serve
from .app import App


@click.command("serve")
@click.pass_obj
def command(app: App) -> None:
    """Run the SMTP and IMAP listeners, the outbound queue and the drop spool watcher.

    Stops cleanly on SIGTERM or SIGINT: stops accepting, lets work in flight finish, exits 0."""
    setup_logging(app.config.server.log_level)
    ctx = ServerContext(app.config, app.migrated_store(), app.registry)
    asyncio.run(serve(ctx))

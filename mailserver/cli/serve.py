"""`civicmail serve`: run the servers."""
from __future__ import annotations

import logging

import click

from .. import datadir
from ..logs import setup_logging
from ..server import ServerContext, StartupError, run_loop, serve
from .app import App


log = logging.getLogger("civicmail.server")


def check_data_dir(config, strict: bool) -> None:
    """Warn of each file or folder of the data directory others may read (or the group write);
    with ``strict``, refuse to start."""
    loose = datadir.too_open(config)
    if not loose:
        return
    for path, mode in loose[:20]:
        log.warning("%s is mode %04o: it should be %04o or tighter (%s)", path, mode,
                    datadir.DIR_MODE if path.is_dir() else datadir.FILE_MODE, "refusing to start" if strict else
                    "others may read mail, password hashes or keys")
    if len(loose) > 20:
        log.warning("... and %d more paths in %s", len(loose) - 20, config.data_dir)
    if strict:
        raise StartupError(f"{len(loose)} path(s) in the data directory {config.data_dir} are open to others "
                           f"(serve --strict): chmod -R g-w,o-rwx {config.data_dir}")


@click.command("serve")
@click.option("--strict", is_flag=True, help="refuse to start if the data directory is open to others")
@click.pass_obj
def command(app: App, strict: bool) -> None:
    """Run the SMTP and IMAP listeners, the outbound queue and the drop spool watcher.

    Stops cleanly on SIGTERM or SIGINT: stops accepting, lets work in flight finish, exits 0.
    At start, checks that the data directory is closed to others (warns, or refuses with --strict)."""
    setup_logging(app.config.server.log_level)
    check_data_dir(app.config, strict)
    ctx = ServerContext(app.config, app.migrated_store(), app.registry)
    run_loop(app.config, serve(ctx))

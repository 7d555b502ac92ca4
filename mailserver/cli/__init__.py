"""The operator CLI, `civicmail`: one group, one module per command group, commands thin.

User errors print a clean message and exit non-zero (1; 2 for configuration and usage errors);
exception text from inside never reaches the terminal as a traceback.
"""
from __future__ import annotations

import os
import sys

import click

from .. import datadir
from ..errors import ConfigError, CivicmailError
from ..logs import CLI_FORMAT, setup_logging
from .app import App

# Each module defines a click command or group named `command`; order is the help order.
COMMAND_MODULES = (
    "init", "db", "serve", "citizen", "agency", "keys", "stats", "bench",
    "drop", "notice", "queue",
    "topic", "bulletin", "survey", "application", "services",
    "backup", "restore", "check", "audit",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", metavar="PATH",
              help="configuration file (default: $CIVICMAIL_CONFIG, else ./civicmail.toml)")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override one configuration key for this run (repeatable)")
@click.version_option(package_name="civicmail")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """civicmail: real-name city mailboxes, and notices from agencies' data drops."""
    # What civicmail writes (the database's WAL, spool folders, drop reports) is never readable by
    # others (mailserver/datadir.py); config/civicmail.service sets the same for the service.
    os.umask(datadir.UMASK)
    setup_logging("warning", fmt=CLI_FORMAT)  # one escaped line per record (logs.py); `serve` sets its own level
    ctx.obj = App(config_path, overrides)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        status = cli.main(args=argv, prog_name="civicmail", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ConfigError as exc:
        click.echo(f"civicmail: configuration error: {exc}", err=True)
        return 2
    except CivicmailError as exc:
        click.echo(f"civicmail: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        from ..store.outage import describe, is_outage

        if not is_outage(exc):
            raise
        # the database is unreachable, locked or timed out: one line, not a traceback with its SQL
        click.echo(f"civicmail: the database is unavailable ({describe(exc)}); try again later", err=True)
        return 1
    # without standalone mode click returns, not raises, the code of a click.exceptions.Exit that
    # a command raised (`civicmail check`'s status for monitoring)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

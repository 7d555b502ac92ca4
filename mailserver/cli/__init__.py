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
from .lazy import LazyCommand, LazyGroup

# Each command lives in mailserver/cli/<name>.py as the click command `command`, imported only when it
# runs (lazy.py): most of them import SQLAlchemy and Alembic, which `--help` must not pay for. The help
# line is the first sentence of the command's docstring (tests/test_cli_fast.py keeps them equal).
COMMANDS = {
    name: LazyCommand(f"{__name__}.{name}", short_help) for name, short_help in (
        ("init", "Set up DATA_DIR: configuration, database, ID-number keys, TLS certificate, DKIM key."),
        ("db", "Database schema: upgrade, current revision."),
        ("blobs", "Message bodies in the blob store: status, move them out of the database, collect garbage."),
        ("serve", "Run the SMTP and IMAP listeners, the outbound queue and the drop spool watcher."),
        ("citizen", "Register citizens, show, disable, set passwords, import in bulk, activate."),
        ("agency", "Register agencies, set their credentials, grant notice types."),
        ("keys", "The ID-number encryption key: rotate it, show its versions, retire old ones."),
        ("stats", "Messages delivered by agency and notice type, citizens registered and activated, "
                  "active users, and growth against the same period a year before."),
        ("bench", "Benchmarks: each prints the figure an issue asks for."),
        ("drop", "Agency data drops: one file, one notice type, one notice per citizen."),
        ("notice", "Notice types (templates/<id>/) and who opted out of the optional ones."),
        ("queue", "Inspect and manage the outbound queue."),
        ("topic", "Subscription topics (policies, regulations, district news)."),
        ("bulletin", "Bulletins to a topic's subscribers."),
        ("survey", "Surveys and appraisals answered by replying to a ballot."),
        ("application", "Citizens' applications to agencies, by mail."),
        ("services", "Service mail the citizen-services worker could not handle."),
        ("backup", "Back up the data directory into DEST (new or empty) while `serve` runs."),
        ("restore", "Restore the backup SRC into DATA_DIR (new or empty), with its civicmail.toml."),
        ("check", "Check the data directory's permissions, the ID-number keys, the TLS certificate, the DKIM "
                  "key and the MX, SPF and DKIM records in DNS, disk space, the schema and the outbound queue."),
        ("ca", "The city CA: make it, issue and revoke agencies' and citizens' certificates, print the root."),
        ("audit", "The audit trail: who looked at personal data or changed the registry, when and why."),
        ("oidc", "The OpenID Connect provider: register city websites, rotate the signing keys."),
        ("webmail", "The webmail (Roundcube): its configuration for this city, single sign-on included."),
    )
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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

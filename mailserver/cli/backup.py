"""`civicmail backup DEST --keys-to KEYDIR`: an online backup, the ID-number keys kept apart."""
from __future__ import annotations

from pathlib import Path

import click

from .app import App
from .reveal import reason_option


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keys-to", "keys_to", type=click.Path(file_okay=False, path_type=Path), metavar="KEYDIR",
              help="where the ID-number and sign-in (OpenID Connect) keys go (required): a folder apart from "
                   "DEST, ideally on other media")
@reason_option
@click.pass_obj
def command(app: App, dest: Path, keys_to: Path | None, reason: str | None) -> None:
    """Back up the data directory into DEST (new or empty) while `serve` runs.

    DEST gets a consistent snapshot of the database (SQLite's online backup API, or pg_dump),
    the TLS certificate and key, the DKIM key, the configuration, the spool and the drop reports,
    and a manifest with the SHA-256 of every file. The ID-number keys go only to KEYDIR: without
    them the backup reveals no ID number, and with them elsewhere one lost disk is not both.
    The sign-in key goes with them. Audited (a backup reads every citizen's data), with --reason."""
    from ..backup import backup
    from ..registry.audit import reveal

    def audit(where: Path) -> None:
        # the store as it is, not refused when behind: a backup comes before `db upgrade`
        reveal(app.store, "backup", f"the data directory {app.config.data_dir} to {where}", reason)

    result = backup(app.config, dest, keys_to, audit)
    click.echo(f"backup             {result.dest} ({result.engine} database at revision {result.revision or 'empty'}, "
               f"{result.files} files, {result.bytes:,} bytes)")
    click.echo(f"ID-number keys     {result.keys_to} (keep apart from the backup; a restore needs both)")
    for key, where in sorted(result.paths.items()):
        if where.startswith("external/"):
            click.echo(f"also copied        {key} from outside the data directory, as {where}")

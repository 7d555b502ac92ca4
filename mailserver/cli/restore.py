"""`civicmail restore SRC DATA_DIR --keys-from KEYDIR`: a backup into a new data directory."""
from __future__ import annotations

from pathlib import Path

import click

from .app import App


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keys-from", "keys_from", required=True, metavar="KEYDIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the folder `backup --keys-to` wrote the ID-number keys to")
@click.option("--store-url", metavar="URL",
              help="PostgreSQL backups: the empty database to restore into (postgresql://...)")
@click.pass_obj
def command(app: App, src: Path, data_dir: Path, keys_from: Path, store_url: str | None) -> None:
    """Restore the backup SRC into DATA_DIR (new or empty), with its civicmail.toml.

    Every file is checked against the manifest's SHA-256 and the keys against the backup before
    anything is written; after, the keys must decrypt the restored ID numbers. A SQLite backup is
    restored into DATA_DIR; a PostgreSQL one into the empty database of --store-url (pg_restore)."""
    from ..backup import restore

    result = restore(src, data_dir, keys_from, store_url)
    click.echo(f"restored           {result.data_dir} ({result.files} files; {result.engine} database at revision "
               f"{result.revision or 'empty'}; keys checked on {result.citizens_checked} citizens)")
    click.echo(f"configuration      {result.config_path}")
    for note in result.notes:
        click.echo(f"note               {note}")
    if result.revision != result.head:
        click.echo(f"the schema is behind this civicmail ({result.head}): run "
                   f"`civicmail -c {result.config_path} db upgrade` before `serve`")
    click.echo(f"start it with      civicmail -c {result.config_path} serve")

"""`civicmail blobs`: message bodies in the blob store: where they are, moving them out of the
database, collecting the ones nothing refers to."""
from __future__ import annotations

import click

from ..errors import UserError
from .app import App


@click.group("blobs")
def command() -> None:
    """Message bodies in the blob store: status, move them out of the database, collect garbage."""


def _blob_store(app: App):
    store = app.migrated_store()
    if store.blobs is None:
        raise UserError("blobs.backend is \"database\": message bodies are kept in the database, there is no "
                        "blob store (set [blobs] backend = \"local\" or \"s3\")")
    return store


@command.command("status")
@click.pass_obj
def status(app: App) -> None:
    """Print where bodies go, how many are still in the database, how many blobs wait for GC."""
    from ..store.bodies import bodies_in_database
    from ..store.driver import driver_rows, raw_reader

    store = app.migrated_store()
    click.echo(f"backend: {store.blobs.describe() if store.blobs else 'the database (content.raw)'}")
    with raw_reader(store) as r:
        in_blobs, released = driver_rows(r, "SELECT (SELECT count(*) FROM content WHERE blob_key IS NOT NULL), "
                                            "(SELECT count(*) FROM blob_release)")[0]
    click.echo(f"bodies in the blob store: {in_blobs}")
    click.echo(f"bodies still in the database: {bodies_in_database(store)}")
    click.echo(f"released blobs waiting for gc: {released}")
    if hasattr(store.blobs, "pack_usage"):
        packs, packed, live, total = store.blobs.pack_usage()
        click.echo(f"packs: {packs}, holding {packed} bodies ({live / 1e6:.1f} MB of {total / 1e6:.1f} MB: "
                   f"the rest is bodies deleted from packs still in use)")


@command.command("migrate")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10000),
              help="bodies moved per transaction")
@click.option("--limit", type=click.IntRange(1), help="stop after moving this many")
@click.pass_obj
def migrate(app: App, batch: int, limit: int | None) -> None:
    """Move message bodies still in the database to the blob store, in batches, while serve runs.

    Resumable: stopped at any point, a second run goes on where the first stopped; a message is
    readable throughout (from the database until its batch commits, from the blob store after)."""
    from tqdm import tqdm

    from ..store.bodies import bodies_in_database, migrate_bodies

    store = _blob_store(app)
    total = bodies_in_database(store)
    if limit is not None:
        total = min(total, limit)
    with tqdm(total=total, unit="body", desc="moving bodies", disable=None) as bar:
        moved = migrate_bodies(store, batch=batch, limit=limit, progress=bar.update)
    click.echo(f"moved {moved} bodies to the {store.blobs.backend} blob store; "
               f"{bodies_in_database(store)} left in the database")


@command.command("gc")
@click.option("--grace-minutes", type=click.IntRange(0), default=None,
              help="sweep only unreferenced blobs older than this (default: blobs.orphan_grace_minutes)")
@click.pass_obj
def gc(app: App, grace_minutes: int | None) -> None:
    """Delete blobs whose last message went, and orphans older than the grace period.

    Orphans are blobs written for a message whose transaction never committed (a crash between
    the two). Safe while serve runs, on any number of nodes."""
    from ..store.bodies import collect

    store = _blob_store(app)
    grace = app.config.blobs.orphan_grace_minutes if grace_minutes is None else grace_minutes
    done = collect(store, grace * 60.0)
    click.echo(f"deleted {done['released']} released blob(s); swept {done['swept']} blob(s) older than "
               f"{grace} min, deleted {done['orphans']} orphan(s)")


@command.command("reindex")
@click.pass_obj
def reindex(app: App) -> None:
    """Index again the local store's packs its index does not name, from each pack's trailer.

    For a lost or damaged blobs/packs/index.sqlite3 (move it aside first): every body whose bytes
    still hash to its key is readable again. Without an index, `blobs gc` refuses to sweep."""
    store = _blob_store(app)
    if not hasattr(store.blobs, "reindex"):
        raise UserError("blobs.backend is not \"local\": only the local blob store has packs")
    packs, found = store.blobs.reindex()
    click.echo(f"indexed {found} bodies from {packs} pack(s)")

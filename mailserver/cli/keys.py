"""`civicmail keys`: rotate the ID-number encryption key, show which versions rows use, retire old ones."""
from __future__ import annotations

import sys

import click

from ..registry.keys import COLUMNS, DEFAULT_BATCH, key_status, retire, rotate
from .app import App, echo_table
from .reveal import reason_option


@click.group("keys")
def command() -> None:
    """The ID-number encryption key: rotate it, show its versions, retire old ones."""


def _versions(versions: list[int]) -> str:
    return ", ".join(map(str, versions))


@command.command("rotate")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="rows re-encrypted per transaction")
@reason_option
@click.pass_obj
def rotate_cmd(app: App, batch_size: int, reason: str | None) -> None:
    """Add an encryption key version, make it current and re-encrypt every row on an older one.

    The key file is saved first (the old versions kept), so a crash leaves every row readable;
    run the command again and it carries on with the rows still on an older version, without
    adding another key. Citizens' ID numbers and the sealed rows of drops are re-encrypted.

    Only the encryption key rotates. The MAC key (the ID-number index and the hashes of
    activation codes) is kept: a new one would invalidate every activation code not yet used.

    Running servers keep writing with the version they loaded: restart them, then
    `civicmail keys retire` removes the old versions. Every ID number is decrypted on the way:
    audited, with --reason."""
    from tqdm import tqdm

    registry = app.registry
    with tqdm(total=None, unit=" rows", disable=None, file=sys.stderr, desc="re-encrypt") as bar:
        def start(total: int) -> None:
            bar.total = total
            bar.refresh()

        report = rotate(registry, batch_size, progress=bar.update, on_start=start, reason=reason)
    if report.added:
        click.echo(f"key version {report.version} added and made current in {report.path} "
                   f"(versions {_versions(report.versions)})")
    else:
        click.echo(f"rows were still on older versions: carried on with version {report.version} "
                   "(no key added; run again for a new version)")
    for enc in COLUMNS:
        counts = report.reencrypted[enc.label]
        per = ", ".join(f"{n} from version {v}" for v, n in sorted(counts.items()))
        click.echo(f"re-encrypted {sum(counts.values())} {enc.label}" + (f": {per}" if per else ""))
    click.echo(f"restart every running civicmail server (serve, drop runs) so that it writes with version "
               f"{report.version}; then `civicmail keys retire` removes the old versions. "
               f"Back up the keys folder ({report.path.parent}) now.")


@command.command("status")
@click.pass_obj
def status_cmd(app: App) -> None:
    """The current key version, the versions in the key file, and how many rows use each."""
    st = key_status(app.registry)
    click.echo(f"key file  {st.path}")
    click.echo(f"current   version {st.current}")
    click.echo(f"versions  {_versions(st.versions)}")
    click.echo("")
    versions = sorted(set(st.versions) | set(st.missing))
    rows = []
    for v in versions:
        note = "current" if v == st.current else ("MISSING from the key file" if v in st.missing else "")
        rows.append((v, *(st.usage[enc.label].get(v, 0) for enc in COLUMNS), note))
    echo_table(rows, ("version", *(enc.label for enc in COLUMNS), "note"))
    old = sum(n for counts in st.usage.values() for v, n in counts.items() if v != st.current)
    if old:
        click.echo(f"\nrows on older versions: {old}; `civicmail keys rotate` re-encrypts them "
                   "(after restarting the servers)")


@command.command("retire")
@reason_option
@click.pass_obj
def retire_cmd(app: App, reason: str | None) -> None:
    """Remove the encryption versions no row uses any more (never the current one).

    Refuses, leaving the key file as it is, while any row still uses an older version. Run it
    only once every server was restarted after `keys rotate`: a server still holding an old
    version as its current one would write rows nobody can read once that version is gone."""
    report = retire(app.registry, reason=reason)
    if report.removed:
        click.echo(f"retired key version(s) {_versions(report.removed)} from {report.path}; "
                   f"kept {_versions(report.versions)} (current {report.current})")
        click.echo("backups of the keys folder still hold the retired keys: replace them with a fresh backup")
    else:
        click.echo(f"nothing to retire: {report.path} holds only the current version {report.current}")

"""`civicmail init DATA_DIR`: configuration, database, keys, certificates, DNS records; a demo city.

The work is done by ``mailserver.provision``; this command prints what it made."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .. import config as config_mod
from .. import datadir
from ..provision import (dns_records, make_demo, make_demo_appraisal, make_demo_ca, make_spool_folders, prepare,
                         run_demo_drops, write_config)
from ..registry import Registry
from .app import App


@click.command("init")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--domain", help="the city's mailbox domain (default: civic.example)")
@click.option("--hostname", help="this server's host name (default: mail.<domain>)")
@click.option("--demo", is_flag=True, help="also register three agencies and a few citizens, and print their logins")
@click.pass_obj
def command(app: App, data_dir: Path, domain: str | None, hostname: str | None, demo: bool) -> None:
    """Set up DATA_DIR: configuration, database, ID-number keys, TLS certificate, DKIM key.

    Safe to run again: what exists is kept (an existing civicmail.toml is not rewritten)."""
    data_dir.mkdir(mode=datadir.DIR_MODE, parents=True, exist_ok=True)
    path = data_dir / "civicmail.toml"
    # --set store.url=... is written into a new file: the commands after init must find the same store
    store_url = config_mod.build({}, app.overrides).store.url
    if path.exists():
        if domain or hostname:
            click.echo(f"{path} exists: --domain and --hostname ignored (edit the file instead)", err=True)
        if store_url and config_mod.load(path).store.url != store_url:
            click.echo(f"{path} exists: its store.url is not the one given with --set; the commands that follow "
                       "use the file's (edit the file to change it)", err=True)
    else:
        domain = (domain or "civic.example").lower()
        write_config(path, domain, hostname or f"mail.{domain}", store_url)
        os.chmod(path, 0o640)
    config = config_mod.load(path, app.overrides)
    app.use_config(config)
    click.echo(f"civicmail data directory {config.data_dir}")
    click.echo(f"configuration      {path}")
    for line in prepare(config):
        click.echo(line)
    from delivery.maildrop import drop_address, ensure_drop_mailbox

    from ..identity.addresses import statements_address
    from ..services.topics import ensure_statements

    if ensure_drop_mailbox(app.registry):  # also made when `serve` starts the drop watcher
        click.echo(f"drop mailbox       {drop_address(app.registry)} (agencies mail their data drops here)")
    if ensure_statements(app.registry):  # also made when `serve` starts the citizen services
        click.echo(f"opt-out address    {statements_address(app.registry.domain)} (optional statements' List-Unsubscribe)")
    click.echo("\nDNS records to publish:")
    for line in dns_records(config):
        click.echo("  " + line)
    if demo:
        made = make_demo(app.registry)
        if made:
            creds = config.data_dir / "demo-credentials.txt"
            fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                for row in made:
                    fh.write("\t".join(row) + "\n")
            click.echo(f"\nDemo logins (also in {creds}):")
            for who, login, password in made:
                click.echo(f"  {who:<12} {login:<32} {password}")
        else:
            click.echo(f"\nDemo city already present; logins are in {config.data_dir / 'demo-credentials.txt'}")
        signing = make_demo_ca(app.registry)  # before the drops: their notices are signed
        if signing:
            click.echo("\nCity CA (S/MIME-signed notices):")
            for line in signing:
                click.echo("  " + line)
        drops = run_demo_drops(app.registry)
        if drops:
            click.echo("\nSample drops run (templates/*/sample.csv):")
            for line in drops:
                click.echo("  " + line)
        appraisal = make_demo_appraisal(app.registry)
        if appraisal:
            click.echo("\n" + appraisal)
    spool_folders(app.registry)


def spool_folders(registry: Registry) -> None:
    made = make_spool_folders(registry)
    if made:
        click.echo(f"\nspool folders      {len(made)} made under {registry.config.data_path(registry.config.delivery.spool_dir)}"
                   " (spool/<agency>/<notice type>/: a file written there is run as a drop)")

"""`civicmail init DATA_DIR`: configuration, database, keys, certificates, DNS records; a demo city."""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import click

from .. import config as config_mod
from .. import datadir
from ..config import REPO_ROOT, Config
from ..errors import Conflict
from ..identity.certs import dkim_dns_record, make_dkim_key, make_self_signed
from ..identity.keys import IdKeyring
from ..registry import Registry
from ..registry.agencies import add_agency, grant, list_agencies, sync_notice_types
from ..registry.citizens import add_citizen
from ..registry.oidc import ensure_provider
from ..store import migrate, open_store
from .app import App

TEMPLATE = REPO_ROOT / "config" / "civicmail.toml"

#: the sample drops `init --demo` runs, so that every demo INBOX holds notices of three or four
#: types from all three agencies; the README's walkthrough runs one more (violation-points)
DEMO_DROPS = ("licence-renewal", "vehicle-inspection", "overdue-fine", "medical-statement", "pension-statement",
              "provident-fund-statement")


def write_config(path: Path, domain: str, hostname: str) -> None:
    """The commented default configuration, with this city's domain and host name."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^domain = ".*"$', f'domain = "{domain}"', text, count=1)
    text = re.sub(r'(?m)^hostname = ".*"$', f'hostname = "{hostname}"', text, count=1)
    path.write_text(text, encoding="utf-8")


def sync_catalog(registry: Registry) -> int:
    from delivery.catalog import load_catalog

    return sync_notice_types(registry, [d.as_row() for d in load_catalog(registry.config.templates_dir).values()])


def prepare(config: Config) -> list[str]:
    """Everything but the demo; idempotent. Returns lines describing what was made."""
    made = []
    data = config.data_dir
    data.mkdir(mode=datadir.DIR_MODE, parents=True, exist_ok=True)
    datadir.create_database_file(config)
    keys_dir = config.data_path(config.keys.dir)
    if not (keys_dir / "idnumber.json").exists():
        IdKeyring.generate().save(keys_dir)
        made.append(f"ID-number keys     {keys_dir} (back this folder up separately)")
    store = open_store(config)
    try:
        before = migrate.current_revision(store)
        migrate.upgrade(store)
        made.append(f"database           {store.url.split('///')[-1] if store.dialect == 'sqlite' else store.dialect}"
                    f" at revision {migrate.current_revision(store)}" + ("" if before else " (new)"))
        registry = Registry(config, store)
        made.append(f"notice types       {sync_catalog(registry)} loaded from {config.templates_dir}")
        made.extend(ensure_provider(registry))
    finally:
        store.dispose()
    cert, key = config.data_path(config.tls.cert), config.data_path(config.tls.key)
    if not cert.exists() or not key.exists():
        make_self_signed(cert, key, config.server.hostname)
        made.append(f"TLS certificate    {cert} (self-signed for {config.server.hostname}, localhost)")
    dkim = config.data_path(config.dkim.key)
    if not dkim.exists():
        make_dkim_key(dkim)
        made.append(f"DKIM key           {dkim} (selector {config.dkim.selector})")
    datadir.secure(config)
    return made


def dns_records(config: Config) -> list[str]:
    domain, host = config.city.domain, config.server.hostname
    dkim = dkim_dns_record(config.data_path(config.dkim.key))
    return [
        f"{domain}.  MX   10 {host}.",
        f'{domain}.  TXT  "v=spf1 mx -all"',
        f'{config.dkim.selector}._domainkey.{domain}.  TXT  "{dkim}"',
        f'_dmarc.{domain}.  TXT  "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"',
    ] + [  # RFC 6186: how mail clients find the servers from an address alone
        f"_{service}._tcp.{domain}.  SRV  0 1 {port} {config.client_host}."
        for _, service, port, _ in config.client_endpoints()
    ] + ([f"autoconfig.{domain}.  CNAME  {host}.   ; Thunderbird autoconfig, served on http.listen"]
         if config.http.listen else [])


def demo_password() -> str:
    return "demo-" + secrets.token_urlsafe(8)


def make_demo(registry: Registry) -> list[tuple[str, str, str]]:
    """The three agencies of MISSION.md with their grants, and the people of the sample drops
    as citizens. Returns (who, login, password) for what was made now; what exists already is
    left alone."""
    from delivery.catalog import load_agencies, load_catalog, sample_people

    from ..services.applications import setup_desk

    catalog = load_catalog(registry.config.templates_dir)
    existing = {a.id for a in list_agencies(registry)}
    made = []
    for agency_id, info in load_agencies(registry.config.templates_dir).items():
        if agency_id in existing:
            continue
        password = demo_password()
        add_agency(registry, agency_id, info["name"], [info["sender"]], password, actor="init --demo")
        grant(registry, agency_id, sorted(d.id for d in catalog.values() if d.agency == agency_id), actor="init --demo")
        if any(d.agency == agency_id and d.kind == "application" for d in catalog.values()):
            setup_desk(registry, agency_id)  # the address its application notices name
        made.append((info["name"], agency_id, password))
    for n, (number, name) in enumerate(sample_people(catalog).items(), start=1):
        password = demo_password()
        try:
            citizen = add_citizen(registry, name, number, f"138{n:08d}", password=password, actor="init --demo")
        except Conflict:
            continue
        made.append((name, citizen.address, password))
    return made


def run_demo_drops(registry: Registry) -> list[str]:
    """Run the DEMO_DROPS sample drops (those not run yet). Returns a line for each drop run."""
    from delivery.catalog import load_catalog
    from delivery.read import AlreadyRun
    from delivery.runner import run_drop

    catalog = load_catalog(registry.config.templates_dir)
    lines = []
    for notice_type in DEMO_DROPS:
        definition = catalog[notice_type]
        try:
            result = run_drop(registry, definition.folder / "sample.csv", definition.agency, notice_type,
                              source="demo")
        except AlreadyRun:
            continue
        delivered = result.summary.counts.get("delivered", 0)
        lines.append(f"drop {result.drop_id:<3} {notice_type:<26} {definition.agency:<16} {delivered} notices delivered")
    return lines


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
    if path.exists():
        if domain or hostname:
            click.echo(f"{path} exists: --domain and --hostname ignored (edit the file instead)", err=True)
    else:
        domain = (domain or "civic.example").lower()
        write_config(path, domain, hostname or f"mail.{domain}")
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
        drops = run_demo_drops(app.registry)
        if drops:
            click.echo("\nSample drops run (templates/*/sample.csv):")
            for line in drops:
                click.echo("  " + line)
    spool_folders(app.registry)


def spool_folders(registry: Registry) -> None:
    """The spool folder of every grant (an agency's system writes its drops there)."""
    from delivery.spool import make_folders

    made = make_folders(registry.config, [(a.id, nt) for a in list_agencies(registry) for nt in a.grants])
    if made:
        click.echo(f"\nspool folders      {len(made)} made under {registry.config.data_path(registry.config.delivery.spool_dir)}"
                   " (spool/<agency>/<notice type>/: a file written there is run as a drop)")

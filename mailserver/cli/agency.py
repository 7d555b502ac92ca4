"""`civicmail agency`: agencies, their sender addresses, credentials and grants."""
from __future__ import annotations

import click

from ..registry.agencies import add_agency, grant, list_agencies, set_agency_password
from .app import App, echo_table, read_secret_stdin


@click.group("agency")
def command() -> None:
    """Register agencies, set their credentials, grant notice types."""


@command.command("add")
@click.argument("agency_id")
@click.option("--name", required=True, help="the agency's official name")
@click.option("--sender", "senders", multiple=True, required=True,
              help="an address the agency sends from (repeatable); the first is also its mailbox")
@click.option("--password-stdin", is_flag=True, help="read the agency's password from standard input")
@click.pass_obj
def add(app: App, agency_id: str, name: str, senders: tuple[str, ...], password_stdin: bool) -> None:
    """Register an agency."""
    password = read_secret_stdin() if password_stdin else None
    view = add_agency(app.registry, agency_id, name, list(senders), password)
    click.echo(f"agency {view.id}: senders {', '.join(view.senders)}"
               + (f"; mailbox {view.mailbox}" if view.mailbox else ""))
    if password is None:
        click.echo("no credential yet: set one with `civicmail agency passwd ID --password-stdin`")


@command.command("passwd")
@click.argument("agency_id")
@click.option("--password-stdin", is_flag=True, required=True, help="read the new password from standard input")
@click.pass_obj
def passwd(app: App, agency_id: str, password_stdin: bool) -> None:
    """Give an agency a new credential (revoking the old ones)."""
    set_agency_password(app.registry, agency_id, read_secret_stdin())
    click.echo(f"new credential for {agency_id}")


@command.command("grant")
@click.argument("agency_id")
@click.argument("notice_types", nargs=-1, required=True)
@click.pass_obj
def grant_cmd(app: App, agency_id: str, notice_types: tuple[str, ...]) -> None:
    """Allow an agency to send these notice types."""
    from delivery.spool import make_folders

    added = grant(app.registry, agency_id, list(notice_types))
    click.echo(f"{agency_id}: granted {', '.join(added) if added else 'nothing new'}")
    for folder in make_folders(app.config, [(agency_id, nt) for nt in notice_types]):
        click.echo(f"spool folder {folder}")


@command.command("list")
@click.pass_obj
def list_cmd(app: App) -> None:
    """List agencies with their senders and grants."""
    rows = [(a.id, a.name, ", ".join(a.senders), len(a.grants), "yes" if a.enabled else "no")
            for a in list_agencies(app.registry)]
    echo_table(rows, ("id", "name", "senders", "grants", "enabled"))

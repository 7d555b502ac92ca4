"""`civicmail application`: agencies' application addresses, the applications, status replies."""
from __future__ import annotations

import click

from ..errors import ValidationError
from ..services import applications
from .app import App, echo_table
from .reveal import audit_reveal, reason_option


@click.group("application")
def command() -> None:
    """Citizens' applications to agencies, by mail."""


@command.command("setup")
@click.argument("agency_id")
@click.option("--address", help="the application address (default: AGENCY-apply@domain)")
@click.pass_obj
def setup(app: App, agency_id: str, address: str | None) -> None:
    """Create the agency's application address; applications arrive in the agency's mailbox."""
    click.echo(f"applications to {agency_id}: {applications.setup_desk(app.registry, agency_id, address)}")


@command.command("list")
@click.option("--agency", help="only this agency's")
@reason_option
@click.pass_obj
def list_(app: App, agency: str | None, reason: str | None) -> None:
    """Applications with their status: who applied to which agency for what. Audited."""
    found = applications.list_applications(app.registry, agency)
    audit_reveal(app, "application list", f"{len(found)} applications to {agency or 'every agency'}", reason)
    echo_table([(a.number, a.agency_id, a.applicant, a.subject, a.status, a.updated_at.strftime("%Y-%m-%d %H:%M"))
                for a in found], ("number", "agency", "applicant", "subject", "status", "updated"))


@command.command("reply")
@click.argument("number")
@click.option("--status", required=True, help="received, in-progress, more-info, approved, rejected, completed "
              "(the citizen reads them in Chinese), or the agency's own words")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def reply(app: App, number: str, status: str, file: str) -> None:
    """Send the agency's answer (FILE, plain text) to the applicant, in the application's thread."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{file}: cannot read: {exc}") from None
    msgid = applications.reply(app.registry, number, status, text)
    click.echo(f"application {number}: {status} (sent {msgid})")

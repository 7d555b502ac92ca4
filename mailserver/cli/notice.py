"""`civicmail notice`: the notice types, a preview of one row, and citizens' opt-outs."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import NotFound, ValidationError
from .app import App, echo_table
from .reveal import audit_reveal, reason_option


@click.group("notice")
def command() -> None:
    """Notice types (templates/<id>/) and who opted out of the optional ones."""


def _catalog(app: App):
    from delivery.catalog import load_catalog

    return load_catalog(app.config_or_defaults.templates_dir)


@command.command("list")
@click.pass_obj
def list_types(app: App) -> None:
    """Every notice type: id, agency, kind, mandatory, title."""
    echo_table([(d.id, d.agency, d.kind, "yes" if d.mandatory else "no (opt-out)", d.title)
                for d in _catalog(app).values()], ("id", "agency", "kind", "mandatory", "title"))


@command.command("show")
@click.argument("notice_type")
@click.pass_obj
def show(app: App, notice_type: str) -> None:
    """The fields a drop of NOTICE_TYPE carries, with their types and checks."""
    from delivery.catalog import get_definition

    d = get_definition(_catalog(app), notice_type)
    click.echo(f"{d.id}: {d.title}\nagency {d.agency}, {d.kind}, " + ("mandatory" if d.mandatory else
               "optional (citizens may opt out; carries List-Unsubscribe)") + f"\ntemplates {d.folder}\n")
    rows = []
    for f in d.all_fields:
        limits = " ".join(x for x in (f"min {f.min}" if f.min is not None else "",
                                      f"max {f.max}" if f.max is not None else "",
                                      f"pattern {f.pattern}" if f.pattern else "") if x)
        rows.append((f.name, f.type, "yes" if f.required else "no", limits))
    echo_table(rows, ("column", "type", "required", "limits"))
    for c in d.checks:
        click.echo(f"check: {c.rule}   ({c.message})")


@command.command("preview")
@click.argument("notice_type")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--row", "row_number", type=click.IntRange(min=1), default=2, show_default=True,
              help="the row number as the spreadsheet shows it (the header is row 1)")
@click.option("--agency", "agency_id", help="default: the notice type's agency")
@click.option("--encoding")
@click.option("--raw", is_flag=True, help="the RFC 5322 message as stored, not decoded")
@reason_option
@click.pass_obj
def preview(app: App, notice_type: str, file: Path, row_number: int, agency_id: str | None,
            encoding: str | None, raw: bool, reason: str | None) -> None:
    """Print the message a citizen would get for one row of FILE (nothing is delivered).
    Audited (the row is matched against the registry: whose mailbox it is), with --reason."""
    from delivery.catalog import get_definition
    from delivery.preview import preview_row

    d = get_definition(_catalog(app), notice_type)
    text = preview_row(app.registry, d, agency_id or d.agency, file, row_number, encoding, raw)
    audit_reveal(app, "notice preview", f"{notice_type}: row {row_number} of {file}", reason)
    click.echo(text, nl=False)


def _opt(app: App, address: str, notice_type: str, opted_out: bool) -> None:
    from delivery.catalog import get_definition
    from delivery.consent import set_opt_out
    from ..registry.citizens import find_account

    d = get_definition(_catalog(app), notice_type)
    if d.mandatory:
        raise ValidationError(f"{notice_type} is mandatory: citizens cannot opt out of it")
    store = app.migrated_store()
    with store.reader() as s:
        account = find_account(s, address)
        if account.citizen_id is None:
            raise NotFound(f"{address} is not a citizen's mailbox")
        account_id = account.id
    set_opt_out(store, account_id, notice_type, opted_out)
    click.echo(f"{address}: {'opted out of' if opted_out else 'receives again'} {notice_type}")


@command.command("opt-out")
@click.argument("address")
@click.argument("notice_type")
@click.pass_obj
def opt_out(app: App, address: str, notice_type: str) -> None:
    """ADDRESS no longer receives the optional NOTICE_TYPE."""
    _opt(app, address, notice_type, True)


@command.command("opt-in")
@click.argument("address")
@click.argument("notice_type")
@click.pass_obj
def opt_in(app: App, address: str, notice_type: str) -> None:
    """ADDRESS receives the optional NOTICE_TYPE again."""
    _opt(app, address, notice_type, False)

"""`civicmail citizen`: the real-name registry."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import UserError
from ..registry import bulk
from ..registry.citizens import activate, add_citizen, disable_account, set_password, show_citizen
from .app import App, read_secret_stdin


@click.group("citizen")
def command() -> None:
    """Register citizens, show, disable, set passwords, import in bulk, activate."""


@command.command("add")
@click.option("--name", required=True, help="the name as registered (Chinese)")
@click.option("--id-number", required=True, help="18-character resident ID number")
@click.option("--phone")
@click.option("--address", help="mailbox address (default: derived from the name, e.g. zhang.wei)")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input; "
              "without it the account gets a one-time activation code")
@click.pass_obj
def add(app: App, name: str, id_number: str, phone: str | None, address: str | None, password_stdin: bool) -> None:
    """Register one citizen and open their account."""
    password = read_secret_stdin() if password_stdin else None
    made = add_citizen(app.registry, name, id_number, phone, address, password)
    click.echo(made.address)
    if made.activation_code:
        click.echo(f"activation code {made.activation_code} (valid until {made.activation_expires:%Y-%m-%d})")


@command.command("show")
@click.argument("who")
@click.pass_obj
def show(app: App, who: str) -> None:
    """Show a citizen by mailbox address or ID number (the number is shown masked)."""
    v = show_citizen(app.registry, who)
    for label, value in (("name", v.name), ("id number", v.id_masked), ("phone", v.phone or "-"),
                         ("address", v.address), ("state", v.state), ("registered", f"{v.created_at:%Y-%m-%d %H:%M}"),
                         ("last login", f"{v.last_login_at:%Y-%m-%d %H:%M}" if v.last_login_at else "never"),
                         ("messages", f"{v.messages} ({v.bytes_used} bytes)")):
        click.echo(f"{label:<11} {value}")


@command.command("disable")
@click.argument("address")
@click.pass_obj
def disable(app: App, address: str) -> None:
    """Disable an account: no logins, no new mail (its mail is kept)."""
    disable_account(app.registry, address)
    click.echo(f"{address} disabled")


@command.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, required=True, help="read the new password from standard input")
@click.pass_obj
def passwd(app: App, address: str, password_stdin: bool) -> None:
    """Set an account's password (and activate it)."""
    set_password(app.registry, address, read_secret_stdin())
    click.echo(f"password set for {address}")


@command.command("activate")
@click.argument("address")
@click.option("--code", required=True, help="the activation code from the letter")
@click.option("--password-stdin", is_flag=True, required=True, help="read the new password from standard input")
@click.pass_obj
def activate_cmd(app: App, address: str, code: str, password_stdin: bool) -> None:
    """Set the first password of a bulk-created account from its one-time code."""
    activate(app.registry, address, code, read_secret_stdin())
    click.echo(f"{address} activated")


@command.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--codes", "codes_path", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV for the activation letters (default: FILE.codes.csv beside FILE)")
@click.option("--encoding", help="a CSV's encoding (default: UTF-8 with or without BOM, else GB18030)")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the rejected rows (line, reason) to this CSV")
@click.pass_obj
def import_cmd(app: App, file: Path, codes_path: Path | None, encoding: str | None, errors_path: Path | None) -> None:
    """Register citizens from a CSV or an XLSX workbook: name,id_number,phone[,address].

    Bad rows are listed with their line numbers (a workbook's row numbers, from its first
    sheet); the good rows are registered. Safe to rerun: citizens already registered are counted
    and left alone."""
    from tqdm import tqdm

    codes_path = codes_path or file.with_name(file.name + ".codes.csv")
    registry = app.registry
    started = time.monotonic()
    with tqdm(total=None, unit=" rows", disable=None, file=sys.stderr, desc="import") as bar:
        try:
            report = bulk.import_file(registry, file, codes_path, encoding, progress=bar.update)
        except UnicodeDecodeError as exc:
            raise UserError(f"{file}: not readable as {exc.encoding} (try --encoding)") from None
    elapsed = time.monotonic() - started
    for line, reason in report.errors[:200]:
        click.echo(f"line {line}: {reason}", err=True)
    if len(report.errors) > 200:
        click.echo(f"... and {len(report.errors) - 200} more rejected rows", err=True)
    if errors_path:
        import csv

        with open(errors_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["line", "reason"])
            w.writerows(report.errors)
    rate = report.rows / elapsed if elapsed else 0.0
    click.echo(f"rows {report.rows}: imported {report.imported}, already registered {report.already_registered}, "
               f"rejected {len(report.errors)} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    if report.imported:
        click.echo(f"activation codes: {codes_path}")

"""`civicmail citizen`: the real-name registry."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

import click

from ..cells import SpreadsheetWriter
from ..errors import UserError
from ..registry import bulk
from ..registry.citizens import activate, add_citizen, disable_account, set_password, show_citizen
from .app import App, read_secret_stdin
from .reveal import audit_reveal, reason_option


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
@reason_option
@click.pass_obj
def show(app: App, who: str, reason: str | None) -> None:
    """Show a citizen by mailbox address or ID number (the number is shown masked). Audited."""
    v = show_citizen(app.registry, who)
    audit_reveal(app, "citizen show", v.address + ("" if "@" in who else " (found by ID number)"), reason)
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
        with _import_errors(file, codes_path):
            report = bulk.import_file(registry, file, codes_path, encoding, progress=bar.update)
    elapsed = time.monotonic() - started
    for line, reason in report.errors[:200]:
        click.echo(f"line {line}: {reason}", err=True)
    if len(report.errors) > 200:
        click.echo(f"... and {len(report.errors) - 200} more rejected rows", err=True)
    if errors_path:
        with open(errors_path, "w", newline="", encoding="utf-8") as fh:
            w = SpreadsheetWriter(fh)
            w.writerow(["line", "reason"])
            w.writerows(report.errors)
    rate = report.rows / elapsed if elapsed else 0.0
    click.echo(f"rows {report.rows}: imported {report.imported}, already registered {report.already_registered}, "
               f"rejected {len(report.errors)} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    if report.stale_codes:
        click.echo(f"{report.stale_codes} lines of an interrupted run dropped from {codes_path}: "
                   "their accounts were never registered, or hold a newer code")
    if report.imported:
        click.echo(f"activation codes: {codes_path}")


@contextlib.contextmanager
def _import_errors(file: Path, codes_path: Path | None) -> Iterator[None]:
    """An import file that cannot be decoded, or a codes file that cannot be written, as a user
    error: the batch whose codes could not be written was not committed (they go to disk
    before it commits)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not readable as {exc.encoding} (try --encoding)") from None
    except OSError as exc:
        if codes_path is None or exc.filename not in (None, str(codes_path)):
            raise
        raise UserError(f"cannot write the activation codes to {codes_path}: {exc.strerror}; the batch in "
                        "progress was not committed: run the same command again") from None


@command.command("reissue-code")
@click.argument("addresses", nargs=-1)
@click.option("--file", "import_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="every account of this import file (by ID number) still waiting for activation")
@click.option("--codes", "codes_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="CSV the codes are appended to ('-': standard output; default: FILE.codes.csv with --file, "
                   "standard output with addresses)")
@click.option("--encoding", help="the import file's encoding (as `import`)")
@click.pass_obj
def reissue_code(app: App, addresses: tuple[str, ...], import_path: Path | None, codes_path: Path | None,
                 encoding: str | None) -> None:
    """New one-time activation codes, for letters that were lost or expired: for ADDRESS... (each
    must be waiting for activation, or nothing is issued) or with --file for the accounts of an
    import file that still are. The old codes stop working; each reissue is audited."""
    if bool(addresses) == bool(import_path):
        raise click.UsageError("give either ADDRESS... or --file")
    if codes_path is None and import_path is not None:
        codes_path = import_path.with_name(import_path.name + ".codes.csv")
    to_file = codes_path is not None and str(codes_path) != "-"
    registry = app.registry
    with contextlib.ExitStack() as stack, _import_errors(import_path or Path("-"), codes_path if to_file else None):
        out = stack.enter_context(bulk.open_codes(codes_path)) if to_file else click.get_text_stream("stdout")
        if import_path is None:
            report = bulk.reissue_codes(registry, list(addresses), out)
        else:
            source = stack.enter_context(bulk.open_import(import_path, encoding))
            report = bulk.reissue_file(registry, source, out)
        if to_file:
            report.stale_codes = bulk.reconcile_codes(registry, codes_path)
    for line, reason in report.errors[:200]:
        click.echo(f"line {line}: {reason}", err=True)
    for address, state in report.not_pending[:200]:
        click.echo(f"{address} is {state}: no code issued", err=True)
    if import_path is not None:
        click.echo(f"codes issued {report.issued}, not waiting for activation {len(report.not_pending)}, "
                   f"not registered {report.not_registered}, rejected rows {len(report.errors)}", err=not to_file)
    if to_file:
        click.echo(f"activation codes: {codes_path}" + (
            f" ({report.stale_codes} replaced codes dropped)" if report.stale_codes else ""))

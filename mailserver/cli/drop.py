"""`civicmail drop`: run an agency's data drop, and inspect what happened to every row."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import select

from ..errors import NotFound
from ..store.models import Drop
from .app import App, echo_table
from .reveal import audit_reveal, reason_option


@click.group("drop")
def command() -> None:
    """Agency data drops: one file, one notice type, one notice per citizen."""


def _progress_bar():
    """A tqdm bar on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" rows", file=sys.stderr, leave=False)


@command.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--agency", "agency_id", required=True, help="the agency the drop comes from")
@click.option("--notice-type", required=True, help="the notice type of every row (see `notice list`)")
@click.option("--dry-run", is_flag=True, help="validate, match and render, deliver nothing")
@click.option("--encoding", help="the CSV's text encoding (default: UTF-8, or GB18030 when it is not UTF-8)")
@click.option("--force", is_flag=True, help="run a file that was already run (its rows come out as duplicates)")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="where to write the report CSV (default: DATA/drops/<id>/report.csv)")
@click.option("--paper", "paper_path", type=click.Path(dir_okay=False, path_type=Path),
              help="where to write the paper-mail export of unmatched rows (default: DATA/drops/<id>/paper.csv)")
@click.option("--stage-cpu", is_flag=True,
              help="also print the CPU time each stage took (in the processes that ran it), per delivered notice")
@reason_option
@click.pass_obj
def run(app: App, file: Path, agency_id: str, notice_type: str, dry_run: bool, encoding: str | None, force: bool,
        report_path: Path | None, paper_path: Path | None, stage_cpu: bool, reason: str | None) -> None:
    """Run FILE (CSV, JSON Lines or XLSX). Exit 0 when the drop was processed, even with bad
    rows (the report names each one); non-zero when the file as a whole cannot be run. A
    paper-mail export written (it holds ID numbers) is audited."""
    from delivery.runner import run_drop

    bar = _progress_bar()
    try:
        result = run_drop(app.registry, file, agency_id, notice_type, dry_run=dry_run, encoding=encoding,
                          force=force, report_path=report_path, paper_path=paper_path,
                          progress=bar.update if bar else (lambda n: None))
    finally:
        if bar:
            bar.close()
    title = "dry run (nothing delivered)" if dry_run else f"drop {result.drop_id}" + (
        " (resumed)" if result.resumed else "")
    click.echo(title)
    rows = result.summary.table()
    if dry_run:
        rows = [("would deliver" if k == "delivered" else k, v) for k, v in rows]
    echo_table(rows, ("", "count"))
    if stage_cpu:
        echo_table(result.summary.cpu.lines(result.summary.counts["delivered"]),
                   ("stage", "CPU s", "ms per notice"))
    if result.report_path:
        click.echo(f"report: {result.report_path}")
    if result.paper_path:
        audit_reveal(app, "drop run", f"{'dry run of ' + file.name if dry_run else f'drop {result.drop_id}'}: "
                     f"paper-mail export {result.paper_path}", reason)
        click.echo(f"paper-mail export (holds ID numbers, mode 0600): {result.paper_path}")


@command.command("list")
@click.option("--limit", default=50, show_default=True)
@click.pass_obj
def list_drops(app: App, limit: int) -> None:
    """The latest drops."""
    with app.migrated_store().reader() as s:
        drops = s.scalars(select(Drop).order_by(Drop.id.desc()).limit(limit)).all()
        rows = [(d.id, d.agency_id, d.notice_type_id, d.filename, d.source or "", d.state, d.rows_total,
                 d.rows_delivered, d.rows_rejected, f"{d.created_at:%Y-%m-%d %H:%M}") for d in drops]
    echo_table(rows, ("id", "agency", "notice type", "file", "via", "state", "rows", "delivered", "not delivered",
                      "created"))


@command.command("status")
@click.argument("drop_id", type=int)
@click.pass_obj
def status(app: App, drop_id: int) -> None:
    """What happened to the rows of drop DROP_ID."""
    from delivery.report import stored_counts
    from delivery.rowstate import STATUSES

    store = app.migrated_store()
    with store.reader() as s:
        drop = s.get(Drop, drop_id)
        if drop is None:
            raise NotFound(f"no drop {drop_id}")
        head = [("agency", drop.agency_id), ("notice type", drop.notice_type_id), ("file", drop.filename),
                ("sha256", drop.sha256), ("via", drop.source or ""), ("state", drop.state),
                ("created", f"{drop.created_at:%Y-%m-%d %H:%M:%S}"),
                ("finished", f"{drop.finished_at:%Y-%m-%d %H:%M:%S}" if drop.finished_at else "")]
        if drop.error:
            head.append(("error", drop.error))
    counts = stored_counts(store, drop_id)
    echo_table(head + [("rows", sum(counts.values()))] + [(st, counts[st]) for st in STATUSES if counts[st]],
               ("drop", str(drop_id)))


@command.command("report")
@click.argument("drop_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--problems", is_flag=True, help="only the rows that were not delivered")
@reason_option
@click.pass_obj
def report(app: App, drop_id: int, output: Path, problems: bool, reason: str | None) -> None:
    """Write the report CSV of DROP_ID: row number, the original columns, status and reason.
    It holds ID numbers: written with mode 0600, and audited."""
    from delivery.report import write_stored_report

    store = app.migrated_store()
    with store.reader() as s:
        if s.get(Drop, drop_id) is None:
            raise NotFound(f"no drop {drop_id}")
    audit_reveal(app, "drop report", f"drop {drop_id}{' (problems)' if problems else ''} to {output}", reason)
    n = write_stored_report(store, app.registry.keyring, drop_id, output, only_problems=problems)
    click.echo(f"{n:,} rows written to {output}")


@command.command("retry")
@click.argument("drop_id", type=int)
@reason_option
@click.pass_obj
def retry(app: App, drop_id: int, reason: str | None) -> None:
    """Run the held, failed and unmatched rows of DROP_ID again (after fixing the registry).
    The drop's report and paper-mail export are rewritten (audited)."""
    from delivery.runner import drops_dir, retry_drop

    if (drops_dir(app.config, drop_id) / "paper.csv").exists():
        audit_reveal(app, "drop retry", f"drop {drop_id}: paper-mail export rewritten", reason)
    summary = retry_drop(app.registry, drop_id)
    echo_table(summary.table(), ("retry", "count"))

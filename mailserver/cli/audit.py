"""`civicmail audit`: the audit trail, as an inspector asks for it."""
from __future__ import annotations

import datetime as dt
import json

import click

from .app import App, echo_table


@click.group("audit")
def command() -> None:
    """The audit trail: who looked at personal data or changed the registry, when and why."""


@command.command("list")
@click.option("--since", type=click.DateTime(("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")),
              metavar="DATE", help="only from this date (YYYY-MM-DD) or time (YYYY-MM-DD HH:MM:SS) on, UTC")
@click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="at most this many of the latest rows (0: all)")
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per row")
@click.pass_obj
def list_cmd(app: App, since: dt.datetime | None, limit: int, as_json: bool) -> None:
    """The audit rows, oldest first: when (UTC), the OS user, civicmail's actor, the action,
    what it was done to, and the reason given."""
    from ..registry.audit import entries

    rows, more = entries(app.migrated_store(), since.replace(tzinfo=dt.timezone.utc) if since else None,
                         limit or None)
    if as_json:
        click.echo(json.dumps([{"at": r.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                                "os_user": r.os_user, "actor": r.actor, "action": r.action, "detail": r.detail,
                                "reason": r.reason} for r in rows], ensure_ascii=False))
    else:
        echo_table([(f"{r.at:%Y-%m-%d %H:%M:%S}", r.os_user or "", r.actor, r.action, r.detail or "", r.reason or "")
                    for r in rows], ("at (UTC)", "os user", "actor", "action", "what", "reason"))
    if more:
        click.echo(f"(only the latest {limit} rows: --since or --limit 0 for more)", err=True)

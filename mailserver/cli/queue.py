"""`civicmail queue`: the outbound queue (mail for other domains waiting for the relay)."""
from __future__ import annotations

import click

from ..outbound import queue as outbound_queue
from .app import App, echo_table
from .reveal import audit_reveal, reason_option


@click.group("queue")
def command() -> None:
    """Inspect and manage the outbound queue."""


@command.command("list")
@reason_option
@click.pass_obj
def list_(app: App, reason: str | None) -> None:
    """Every entry: state, attempts, next attempt, sender, recipients, size, last error.
    Audited (who wrote to whom is personal data), with --reason."""
    entries = outbound_queue.list_entries(app.migrated_store())
    if not entries:
        click.echo("the outbound queue is empty")
        return
    audit_reveal(app, "queue list", f"{len(entries)} outbound entries: senders and recipients", reason)
    echo_table([(e.id, e.state, e.attempts, f"{e.next_attempt_at:%Y-%m-%d %H:%M:%S}", e.sender,
                 ", ".join(e.recipients), e.size, (e.last_error or "")[:80]) for e in entries],
               ("id", "state", "attempts", "next attempt (UTC)", "sender", "recipients", "bytes", "last error"))


@command.command("retry")
@click.argument("entry_id", type=int, metavar="ID")
@click.pass_obj
def retry(app: App, entry_id: int) -> None:
    """Make entry ID due now (a bounced entry gets one more attempt). A running server picks it
    up within its poll interval."""
    outbound_queue.retry(app.migrated_store(), entry_id)
    click.echo(f"queue entry {entry_id} is due now")


@command.command("delete")
@click.argument("entry_id", type=int, metavar="ID")
@click.pass_obj
def delete(app: App, entry_id: int) -> None:
    """Remove entry ID from the queue without delivering it (no bounce is sent)."""
    outbound_queue.remove(app.migrated_store(), entry_id)
    click.echo(f"queue entry {entry_id} deleted")

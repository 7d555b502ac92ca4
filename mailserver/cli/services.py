"""`civicmail services`: the service mail (votes, subscriptions, applications) the citizen-services
worker could not handle, and handling it again once the cause is fixed."""
from __future__ import annotations

import click

from ..errors import NotFound, UserError
from .app import App, echo_table


@click.group("services")
def command() -> None:
    """Service mail the citizen-services worker could not handle."""


@command.command("failed")
@click.pass_obj
def failed(app: App) -> None:
    """Every message whose handler failed: message id, service address and kind, when. The
    server's log has each one's traceback."""
    from ..services.worker import failed_messages

    messages = failed_messages(app.migrated_store())
    if not messages:
        click.echo("no failed service mail")
        return
    echo_table([(m.message_id, m.address, m.kind, f"{m.failed_at:%Y-%m-%d %H:%M:%S}") for m in messages],
               ("message", "service address", "kind", "failed (UTC)"))


@command.command("retry")
@click.argument("message_ids", type=int, nargs=-1, metavar="[MESSAGE_ID]...")
@click.option("--all", "every", is_flag=True, help="every failed message")
@click.pass_obj
def retry(app: App, message_ids: tuple[int, ...], every: bool) -> None:
    """Make failed messages pending again (after fixing what made them fail): the worker handles
    them as new, a running server within its full scan (five minutes) or at its next start."""
    from ..services.service import FULL_SCAN_ROUNDS, POLL_SECONDS
    from ..services.worker import retry_failed

    if bool(message_ids) == every:
        raise UserError("name the failed messages to retry, or --all")
    pending = retry_failed(app.migrated_store(), None if every else set(message_ids))
    missing = sorted(set(message_ids) - set(pending))
    if missing:
        raise NotFound(f"not a failed service message: {', '.join(map(str, missing))}"
                       + (f" (made pending: {', '.join(map(str, pending))})" if pending else ""))
    minutes = FULL_SCAN_ROUNDS * POLL_SECONDS / 60
    click.echo(f"{len(pending)} message(s) pending again: {', '.join(map(str, pending)) or '-'}; "
               f"a running server handles them within {minutes:.0f} minutes")

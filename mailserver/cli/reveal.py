"""Commands that show or write out personal data (PIPL: ID numbers and medical data are
sensitive) take ``--reason`` and leave an audit row, with the OS user, before the data leaves:
if the row cannot be written, nothing is shown. ``civicmail audit list`` reads them back."""
from __future__ import annotations

from typing import Callable

import click

REASON_HELP = "why you look at this personal data (a case number, a request): kept in the audit trail"


def reason_option(command: Callable) -> Callable:
    """The ``--reason`` option of a command that reveals personal data."""
    return click.option("--reason", metavar="TEXT", help=REASON_HELP)(command)


def audit_reveal(app, action: str, detail: str, reason: str | None) -> None:
    """The audit row for ``action`` (the command, e.g. ``citizen show``) on ``detail`` (whose
    data: an address, a drop; an ID number in it is hidden)."""
    from ..registry.audit import reveal

    reveal(app.migrated_store(), action, detail, reason)

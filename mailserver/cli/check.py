"""`civicmail check`: what an operator must fix, one line each, with an exit status for monitoring."""
from __future__ import annotations

import click

from .app import App


@click.command("check")
@click.option("-q", "--quiet", is_flag=True, help="print only the warnings and failures")
@click.pass_obj
def command(app: App, quiet: bool) -> None:
    """Check the data directory's permissions, the ID-number keys, the TLS certificate, the DKIM
    key and the MX, SPF and DKIM records in DNS, disk space, the schema and the outbound queue.

    One line per finding: OK, WARN or FAIL, what, and in parentheses how to fix it. Exit status
    as Nagios plugins: 0 all OK, 1 a warning, 2 a failure (also for a configuration error)."""
    from ..health import OK, exit_status, run

    findings = run(app.config)
    for finding in findings:
        if not (quiet and finding.status == OK):
            click.echo(finding.line())
    raise click.exceptions.Exit(exit_status(findings))

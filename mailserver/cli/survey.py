"""`civicmail survey`: define, send, close and count surveys and appraisals."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..services import surveys
from .app import App, echo_table
from .reveal import audit_reveal, reason_option


@click.group("survey")
def command() -> None:
    """Surveys and appraisals answered by replying to a ballot."""


@command.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def add(app: App, file: str) -> None:
    """Define a survey from a TOML FILE (see README, "Citizen services")."""
    definition = surveys.load_definition(Path(file))
    address = surveys.add_survey(app.registry, definition)
    click.echo(f"survey {definition['id']} ({definition['kind']}, {len(definition['questions'])} questions, "
               f"{'anonymous' if definition['anonymous'] else 'NOT anonymous'}): replies to {address}")


@command.command("send")
@click.argument("survey_id")
@click.option("--to", "to", default="all", show_default=True, help="all citizens, or a topic id")
@click.pass_obj
def send(app: App, survey_id: str, to: str) -> None:
    """Mail the ballot; nobody gets it twice."""
    n = surveys.send_ballots(app.registry, survey_id, to)
    click.echo(f"ballot mailed to {n} citizens")


@command.command("close")
@click.argument("survey_id")
@click.pass_obj
def close(app: App, survey_id: str) -> None:
    """Stop counting: later replies get a polite refusal."""
    surveys.close_survey(app.registry, survey_id)
    click.echo(f"survey {survey_id} closed")


@command.command("tally")
@click.argument("survey_id")
@click.option("--csv", "as_csv", is_flag=True, help="CSV for spreadsheets")
@click.option("--ballots", is_flag=True, help="who answered what (non-anonymous surveys only; audited)")
@reason_option
@click.pass_obj
def tally(app: App, survey_id: str, as_csv: bool, ballots: bool, reason: str | None) -> None:
    """The counted votes: one per real-name account, the latest reply of each."""
    if ballots:
        named = surveys.named_ballots(app.registry, survey_id)
        audit_reveal(app, "survey tally --ballots", f"survey {survey_id}: {len(named)} named ballots", reason)
        click.echo("address\tanswers")
        for address, answers in named:
            click.echo(f"{address}\t{json.dumps(answers, ensure_ascii=False)}")
        return
    t = surveys.tally(app.registry, survey_id)
    if as_csv:
        click.echo(t.csv(), nl=False)
        return
    click.echo(f"{t.title} ({t.kind}, {t.state}): {t.ballots} ballots")
    echo_table([(n, q, c, label, votes) for n, q, c, label, votes in t.rows],
               ("#", "question", "choice", "choice text", "votes"))
    if t.kind == "appraisal":
        for n, avg in t.averages().items():
            click.echo(f"{n}. {t.rows[(n - 1) * 5][1]}: average {avg:.2f}")

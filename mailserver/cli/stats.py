"""`civicmail stats`: the figures the city reports."""
from __future__ import annotations

import json

import click

from ..registry.stats import stats
from .app import App


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print JSON, for machines")
@click.pass_obj
def command(app: App, as_json: bool) -> None:
    """Citizens registered, accounts activated, messages stored."""
    figures = stats(app.registry).as_dict()
    if as_json:
        click.echo(json.dumps(figures, ensure_ascii=False, indent=2))
        return
    for key, value in figures.items():
        click.echo(f"{key.replace('_', ' '):<22} {value:>12,}")

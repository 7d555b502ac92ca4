"""`civicmail stats`: the figures the city reports."""
from __future__ import annotations

import datetime as dt
import json

import click

from ..registry.stats import city_figures
from .app import App, echo_table


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print JSON, for machines")
@click.option("--days", default=30, show_default=True, help="length of the reporting period, ending today")
@click.option("--until", "until", metavar="YYYY-MM-DD", help="last day of the period (default: today, UTC)")
@click.pass_obj
def command(app: App, as_json: bool, days: int, until: str | None) -> None:
    """Messages delivered by agency and notice type, citizens registered and activated, active
    users, and growth against the same period a year before."""
    try:
        today = dt.date.fromisoformat(until) if until else None
    except ValueError:
        raise click.BadParameter("expected YYYY-MM-DD", param_hint="--until") from None
    figures = city_figures(app.registry, days=days, today=today)
    if as_json:
        click.echo(json.dumps(figures.as_dict(), ensure_ascii=False, indent=2))
        return
    for key, value in figures.base.as_dict().items():
        click.echo(f"{key.replace('_', ' '):<22} {value:>12,}")
    p, b = figures.period, figures.period.year_before()
    click.echo(f"\nperiod {p.first} .. {p.last} (a year before: {b.first} .. {b.last})")
    click.echo(f"{'active users':<22} {figures.active_users:>12,}   a year before {figures.active_users_year_before:,}"
               f", growth {_pct(figures.as_dict()['active_users_growth'])} (an IMAP login in the 30 days to the "
               f"period's end)")
    click.echo(f"{'notices delivered':<22} {figures.notices_period:>12,}   a year before {figures.notices_year_before:,}"
               f", growth {_pct(figures.as_dict()['notices_delivered']['growth'])}; in total {figures.notices_total:,}")
    c = figures.as_dict()["citizens"]
    click.echo(f"{'citizens registered':<22} {figures.citizens_registered_period:>12,}   a year before "
               f"{figures.citizens_registered_year_before:,}, growth {_pct(c['registered_growth'])}; registered in "
               f"total {c['registered_total']:,} (a year before {c['registered_total_year_before']:,}, growth "
               f"{_pct(c['registered_total_growth'])})")
    if figures.by_type:
        click.echo("")
        echo_table(figures.by_type, ("agency", "notice type", "total", "period"))
    if figures.per_day:
        click.echo("")
        echo_table(figures.per_day, ("day", "agency", "notice type", "delivered"))

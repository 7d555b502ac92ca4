"""`civicmail stats`: the city's figures on both engines, against known rows."""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter

from click.testing import CliRunner
from sqlalchemy import update

from mailserver.cli import cli
from mailserver.registry.stats import city_figures, growth
from mailserver.registry.auth import record_login
from mailserver.store.counters import count_notices
from mailserver.store.models import Account, Citizen, LoginDay, Notice

from .conftest import make_citizens

UTC = dt.timezone.utc
TODAY = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(days_ago: int, hour: int = 9) -> dt.datetime:
    d = TODAY - dt.timedelta(days=days_ago)
    return dt.datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def test_city_figures(registry, store):
    citizens = make_citizens(registry, 4)
    with store.session() as s:
        ids = [a.id for a in s.query(Account).where(Account.address.in_(citizens)).order_by(Account.id)]
        rows = [("traffic-police", "licence-renewal", 0), ("traffic-police", "licence-renewal", 0),
                ("traffic-police", "violation-points", 3), ("social-security", "pension-statement", 3),
                ("traffic-police", "licence-renewal", 365), ("traffic-police", "licence-renewal", 400)]
        for n, (agency, kind, ago) in enumerate(rows):
            s.add(Notice(idempotency_key=f"k{n}", agency_id=agency, notice_type_id=kind, account_id=ids[0],
                         delivered_at=at(ago)))
        # in the same transaction, as the pipeline's writer counts them (stats reads the counter)
        count_notices(s, Counter((at(ago).date(), agency, kind) for agency, kind, ago in rows))
        # logins: [0] 2 days ago and a year before; [1] 40 days ago (outside the 30 days) and a
        # year and 10 days ago; [2] 30 days and a year and 30 days ago (just outside both windows)
        for account, ago in ((0, 2), (0, 2), (0, 367), (1, 40), (1, 375), (2, 30), (2, 395)):
            s.merge(LoginDay(account_id=ids[account], day=TODAY - dt.timedelta(days=ago)))
        # one citizen registered a year before the period, one before that
        citizen_ids = [c.id for c in s.query(Citizen).order_by(Citizen.id)]
        s.execute(update(Citizen).where(Citizen.id == citizen_ids[0]).values(created_at=at(370)))
        s.execute(update(Citizen).where(Citizen.id == citizen_ids[1]).values(created_at=at(800)))
        s.execute(update(Citizen).where(Citizen.id.in_(citizen_ids[2:])).values(created_at=at(1)))

    f = city_figures(registry, days=30, today=TODAY, now=NOW)
    assert (f.notices_total, f.notices_period, f.notices_year_before) == (6, 4, 1)
    # the window is the 30 days ending on the period's last day: [0], not [1] (40 days) nor [2] (30);
    # a year before, it ends on 2025-11-27: [0] (367 days ago) and [1] (375) but not [2] (395)
    assert (f.active_users, f.active_users_year_before) == (1, 2)
    assert (f.citizens_registered_period, f.citizens_registered_year_before, f.citizens_total_year_before) == (2, 1, 2)
    assert f.by_type == [("social-security", "pension-statement", 1, 1), ("traffic-police", "licence-renewal", 4, 2),
                         ("traffic-police", "violation-points", 1, 1)]
    assert f.per_day == [(TODAY - dt.timedelta(days=3), "social-security", "pension-statement", 1),
                         (TODAY - dt.timedelta(days=3), "traffic-police", "violation-points", 1),
                         (TODAY, "traffic-police", "licence-renewal", 2)]
    d = f.as_dict()
    assert d["citizens_registered"] == 4 and d["accounts_activated"] == 4  # the foundation's keys stay
    assert d["notices_delivered"]["growth"] == 3.0 and d["citizens"]["registered_total_growth"] == 1.0
    assert (d["active_users"], d["active_users_year_before"], d["active_users_growth"]) == (1, 2, -0.5)
    assert d["period"] == {"first": "2026-10-29", "last": "2026-11-27",
                           "year_before": {"first": "2025-10-29", "last": "2025-11-27"}}
    assert growth(5, 0) is None


def test_a_login_is_recorded_once_per_day(registry, store):
    from sqlalchemy import select

    (address,) = make_citizens(registry, 1)
    with store.reader() as s:
        account = s.scalar(select(Account.id).where(Account.address == address))
    record_login(registry, account)
    record_login(registry, account)  # the same day: no second row, no error
    with store.reader() as s:
        days = list(s.scalars(select(LoginDay.day).where(LoginDay.account_id == account)))
        last = s.scalar(select(Account.last_login_at).where(Account.id == account))
    assert days == [dt.datetime.now(UTC).date()] and last is not None
    assert city_figures(registry, days=1).active_users == 1


def test_stats_command_json_and_text(sqlite_config):
    from mailserver.provision import make_demo  # noqa: F401  (the demo data of `init --demo`)
    from mailserver.registry import Registry
    from mailserver.store import open_store

    store = open_store(sqlite_config)
    try:
        make_citizens(Registry(sqlite_config, store), 2)
    finally:
        store.dispose()
    runner = CliRunner()
    path = str(sqlite_config.source)
    out = runner.invoke(cli, ["-c", path, "stats", "--json", "--days", "7", "--until", "2026-11-27"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["citizens_registered"] == 2 and data["period"]["first"] == "2026-11-21"
    assert data["active_users"] == 0 and data["notices_delivered"]["total"] == 0
    text = runner.invoke(cli, ["-c", path, "stats"])
    assert text.exit_code == 0 and "active users" in text.output and "notices delivered" in text.output
    bad = runner.invoke(cli, ["-c", path, "stats", "--until", "yesterday"])
    assert bad.exit_code != 0

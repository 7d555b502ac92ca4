"""`civicmail stats` reads the maintained notice counter (``notice_count``), not the notices: on
both engines, after drops its figures equal a direct count of the ``notice`` rows, a rerun of a
drop (every row a duplicate) adds nothing, and migration 0023 fills the counter from the notices
already there."""
from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import func, select

from delivery.runner import run_drop
from drophelpers import CATALOG
from mailserver.cli import cli
from mailserver.store import migrate
from mailserver.store.models import Message, Notice, NoticeCount


def _direct(store) -> dict[tuple[str, str], int]:
    """(agency, notice type) -> notices, counted row by row."""
    with store.reader() as s:
        return {(a, t): n for a, t, n in s.execute(
            select(Notice.agency_id, Notice.notice_type_id, func.count()).group_by(Notice.agency_id,
                                                                                   Notice.notice_type_id))}


def _stats(config) -> dict:
    out = CliRunner().invoke(cli, ["-c", str(config.source), "--set", f'store.url="{config.store.url}"',
                                   "stats", "--json", "--days", "1"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def _by_type(figures: dict) -> dict[tuple[str, str], int]:
    return {(r["agency"], r["notice_type"]): r["total"] for r in figures["by_agency_and_type"]}


def _run_samples(registry, force: bool = False) -> list[dict[str, int]]:
    return [run_drop(registry, CATALOG[kind].folder / "sample.csv", CATALOG[kind].agency, kind,
                     force=force).summary.counts
            for kind in ("vehicle-inspection", "violation-points", "pension-statement")]


def test_stats_after_drops_equals_a_direct_count_and_a_rerun_adds_nothing(registry, city, config):
    assert _run_samples(registry) == [{"delivered": 3}] * 3
    direct = _direct(registry.store)
    assert sum(direct.values()) == 9 and len(direct) == 3
    first = _stats(config)
    assert _by_type(first) == direct
    assert first["notices_delivered"]["total"] == first["notices_delivered"]["period"] == 9
    assert sum(r["delivered"] for r in first["per_day"]) == 9  # all today (UTC)
    with registry.store.reader() as s:
        assert first["messages_stored"] == s.scalar(select(func.count(Message.id))) == 9

    assert _run_samples(registry, force=True) == [{"duplicate": 3}] * 3
    again = _stats(config)
    assert _by_type(again) == _direct(registry.store) == direct
    assert again["notices_delivered"] == first["notices_delivered"]


def test_the_migration_fills_the_counter_from_the_notices(registry, city, store):
    _run_samples(registry)
    direct = _direct(store)
    store.engine.dispose()
    migrate.downgrade(store, "0020")  # just below 0023 (below 0017 is refused while bodies are in blobs)
    migrate.upgrade(store)
    with store.reader() as s:
        counted = {(a, t): int(n) for a, t, n in s.execute(
            select(NoticeCount.agency_id, NoticeCount.notice_type_id, func.sum(NoticeCount.delivered))
            .group_by(NoticeCount.agency_id, NoticeCount.notice_type_id))}
    assert counted == direct and sum(counted.values()) == 9


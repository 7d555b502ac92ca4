"""`civicmail bench services`: bulletin fan-out and vote handling on a fresh SQLite data directory.

Citizens come from the bulk importer (accounts pending activation: they receive mail); every one
subscribes to one topic (rows inserted directly: subscribing is not what is measured). Then:
a bulletin published to all of them (messages stored per second), and one reply per citizen to
a survey, delivered into the survey's INBOX with the trusted header as SMTP submission writes it,
handled by the worker (votes counted and receipts stored per second).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click


@click.command("services")
@click.option("--citizens", "count", default=5000, show_default=True)
def command(count: int) -> None:
    """Time a bulletin to COUNT subscribers and COUNT survey replies through the worker."""
    from sqlalchemy import select

    from .. import config as config_mod
    from ..provision import prepare, write_config
    from ..registry import Registry
    from ..registry.bulk import import_file
    from ..services import surveys
    from ..services.bulletins import publish
    from ..services.topics import add_topic
    from ..services.worker import process_pending, service_inboxes
    from ..store import open_store
    from ..store.api import NewMessage
    from ..store.models import Account, Subscription
    from .util import peak_rss_mib, write_citizens_csv

    with tempfile.TemporaryDirectory(prefix="civicmail-bench-services-") as tmp:
        root = Path(tmp)
        path = root / "civicmail.toml"
        write_config(path, "bench.example.cn", "mail.bench.example.cn")
        cfg = config_mod.load(path)
        prepare(cfg)
        store = open_store(cfg)
        reg = Registry(cfg, store)
        write_citizens_csv(root / "c.csv", count)
        import_file(reg, root / "c.csv", None)
        add_topic(reg, "news", "区县新闻")
        with store.session() as s:
            accounts = s.execute(select(Account.id, Account.address).where(Account.citizen_id.is_not(None))).all()
            s.execute(Subscription.__table__.insert(), [{"topic_id": "news", "account_id": a} for a, _ in accounts])

        started = time.monotonic()
        result = publish(reg, "news", "# 区县新闻\n\n本周**道路施工**安排：\n\n- 文三路\n- 天目山路\n")
        elapsed = time.monotonic() - started
        click.echo(f"bulletin: {result.delivered:,} subscribers in {elapsed:.2f} s = "
                   f"{result.delivered / elapsed:,.0f} messages/s")

        address = surveys.add_survey(reg, {"id": "b", "title": "bench", "kind": "survey", "anonymous": True,
                                           "address": "survey-b", "questions": [
                                               surveys.Question("q1", [("A", "a"), ("B", "b"), ("C", "c")]),
                                               surveys.Question("q2", [("A", "a"), ("B", "b")])]})
        with store.session() as s:
            box = s.scalar(select(Account.id).where(Account.address == address))
            store.mail.deliver_in(s, [NewMessage(account_id=box, raw=(
                f"X-Civicmail-Authenticated: citizen={addr}\r\nFrom: {addr}\r\nTo: {address}\r\n"
                f"Subject: Re: bench\r\nMessage-ID: <v{i}@bench>\r\n\r\n1{'ABC'[i % 3]} 2{'AB'[i % 2]}\r\n"
                f"\r\n> 1A 2C\r\n-- \r\nsignature\r\n").encode()) for i, (_, addr) in enumerate(accounts)])
        started = time.monotonic()
        handled = process_pending(reg, service_inboxes(store))
        elapsed = time.monotonic() - started
        tally = surveys.tally(reg, "b")
        click.echo(f"survey: {handled:,} replies handled (counted {tally.ballots:,}, receipts stored) in "
                   f"{elapsed:.2f} s = {handled / elapsed:,.0f} votes/s; peak RSS {peak_rss_mib():.0f} MiB")
        store.dispose()

"""`civicmail topic`: topics citizens subscribe to by mail, and the statements opt-out address."""
from __future__ import annotations

import click

from ..services import topics
from .app import App, echo_table


@click.group("topic")
def command() -> None:
    """Subscription topics (policies, regulations, district news)."""


@command.command("add")
@click.argument("topic_id")
@click.option("--name", required=True, help="what citizens see (List-Id, replies)")
@click.option("--address", help="the topic's mail address (default: TOPIC_ID@domain)")
@click.option("--notice-type", help="an optional notice type: the topic is then its opt-out list")
@click.pass_obj
def add(app: App, topic_id: str, name: str, address: str | None, notice_type: str | None) -> None:
    """Create a topic; citizens subscribe by mailing ADDRESS+subscribe@domain."""
    view = topics.add_topic(app.registry, topic_id, name, address, notice_type)
    click.echo(f"topic {view.id}: {view.address}")
    click.echo(f"  subscribe:   {topics.sub_address(view.address, 'subscribe')}")
    click.echo(f"  unsubscribe: {topics.sub_address(view.address, 'unsubscribe')}")


@command.command("list")
@click.pass_obj
def list_(app: App) -> None:
    """Every topic with its address and number of subscribers."""
    echo_table([(t.id, t.name, t.address, t.notice_type or "", t.subscribers if not t.notice_type else "(opt-out)")
                for t in topics.list_topics(app.registry)], ("id", "name", "address", "notice type", "subscribers"))


@command.command("statements")
@click.pass_obj
def statements(app: App) -> None:
    """Create unsubscribe@domain, where optional statements' List-Unsubscribe points."""
    click.echo(f"opt-out address: {topics.setup_statements(app.registry)}")

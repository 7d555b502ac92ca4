"""`civicmail bulletin publish`: a Markdown file to every subscriber of a topic, once."""
from __future__ import annotations

import click

from ..errors import ValidationError
from ..services.bulletins import publish
from .app import App


@click.group("bulletin")
def command() -> None:
    """Bulletins to a topic's subscribers."""


@command.command("publish")
@click.argument("topic_id")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def publish_(app: App, topic_id: str, file: str) -> None:
    """Publish FILE (Markdown; its first line is the subject). Running it again delivers only
    to subscribers who do not have it yet."""
    try:
        with open(file, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{file}: cannot read: {exc}") from None
    result = publish(app.registry, topic_id, source)
    click.echo(f"bulletin {result.bulletin_id} \"{result.subject}\": delivered to {result.delivered} subscribers"
               + (f" ({result.already} had it already)" if result.already else ""))

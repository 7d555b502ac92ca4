"""A click group that imports a subcommand's module only when that subcommand runs.

Most commands need SQLAlchemy, Alembic, psycopg or the servers, about a second of CPU to import;
`civicmail --help` and `civicmail notice list` need none of them. So a group keeps a static table
(name: where the command lives, its one-line help) and `--help` is drawn from the table, without
importing a single command module. tests/test_cli_fast.py holds the table to the commands' own
docstrings, so the two cannot drift apart.
"""
from __future__ import annotations

import importlib
from typing import Mapping, NamedTuple

import click


class LazyCommand(NamedTuple):
    #: "package.module" (its click command is the attribute `command`) or "package.module:attribute"
    target: str
    #: the one-line help `--help` lists (the first sentence of the command's docstring)
    short_help: str


class LazyGroup(click.Group):
    """A `click.Group` whose `lazy_commands` are imported by `get_command`, on first use."""

    def __init__(self, *args, lazy_commands: Mapping[str, LazyCommand], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.add_command(load(self.lazy_commands[cmd_name]), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click.Group.format_commands, but a command not yet imported is listed from the table."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is None:
                # a stand-in, so the table's help is shortened exactly as click shortens a docstring
                stand_in = click.Command(name, help=self.lazy_commands[name].short_help)
                rows.append((name, stand_in.get_short_help_str(limit)))
            elif not loaded.hidden:
                rows.append((name, loaded.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load(entry: LazyCommand) -> click.Command:
    module_name, _, attribute = entry.target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute or "command")
    if not isinstance(command, click.Command):
        raise TypeError(f"{entry.target} is not a click command")
    return command

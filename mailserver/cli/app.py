"""What every command needs, made on first use: the configuration, the store, the registry."""
from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import config as config_mod
from ..config import Config
from ..errors import ConfigError, UserError

if TYPE_CHECKING:  # the store and the registry import SQLAlchemy: only commands that use them pay for it
    from ..registry import Registry
    from ..store import Store


NO_CONFIG = ("no configuration file found (no -c PATH, no $CIVICMAIL_CONFIG, no ./civicmail.toml here): name the "
             "city's with `civicmail -c PATH ...` (e.g. -c /srv/civicmail/civicmail.toml), or make one with "
             "`civicmail init DATA_DIR`")


class App:
    def __init__(self, config_path: str | None, overrides: tuple[str, ...]) -> None:
        self.config_path = config_path
        self.overrides = overrides
        self._store: Store | None = None

    @cached_property
    def config(self) -> Config:
        """The city's configuration. Without a configuration file a command would work on the
        defaults in the current directory (and make a database there): refused, naming how to
        give one."""
        config = self.config_or_defaults
        if config.source is None:
            raise ConfigError(NO_CONFIG)
        return config

    @cached_property
    def config_or_defaults(self) -> Config:
        """The configuration file's, or the defaults where none is found: for a command that
        reads no city's data (`notice list`: the notice types in the checkout)."""
        return config_mod.load(config_mod.find_config_path(self.config_path), self.overrides)

    def use_config(self, config: Config) -> None:
        """For `init`, which writes the configuration it then works with."""
        self.__dict__["config"] = self.__dict__["config_or_defaults"] = config

    @property
    def store(self) -> Store:
        if self._store is None:
            from ..store import open_store

            self._store = open_store(self.config)
        return self._store

    def migrated_store(self) -> Store:
        """The store, refusing to work on a database whose schema is behind."""
        from ..store import migrate

        store = self.store
        if not migrate.is_current(store):
            raise ConfigError(f"the database at {_safe_url(store.url)} is not at the current schema: "
                              "run `civicmail db upgrade` (or `civicmail init`)")
        return store

    @cached_property
    def registry(self) -> Registry:
        from ..registry import Registry

        return Registry(self.config, self.migrated_store())

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def read_secret_stdin(what: str = "password") -> str:
    """One line from standard input (for --password-stdin), without its line ending."""
    line = sys.stdin.readline()
    if not line:
        raise UserError(f"--{what}-stdin: nothing on standard input")
    return line.rstrip("\r\n")


def echo_table(rows: list[tuple], headers: tuple[str, ...]) -> None:
    """A plain aligned table (wide characters counted as two columns)."""
    import unicodedata

    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    cells = [tuple(str(c) for c in headers)] + [tuple("" if c is None else str(c) for c in r) for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def path_arg(value: str) -> Path:
    return Path(value).expanduser()

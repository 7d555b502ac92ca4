"""Writing a configuration file: the commented template (``config/civicmail.toml``) with every key
set to a given configuration's value, so the file written reads like the one ``init`` writes and
loads back to the same configuration (``civicmail restore``)."""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from . import config as config_mod
from .config import REPO_ROOT, Config

TEMPLATE = REPO_ROOT / "config" / "civicmail.toml"
_SECTION = re.compile(r"^\[(\w+)\]\s*$")
_KEY = re.compile(r"^(\w+) = ")


def toml_value(value: Any) -> str:
    """One value of a configuration field (bool, int, float, str, tuple of str) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are TOML's, but for DEL, which TOML wants escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")  # pragma: no cover


def render(config: Config) -> str:
    """The template with each key's value from ``config``; a key the template lacks is added at
    the end of its section. Checked: the text loads back to ``config``'s values."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "source"}
    pending = {name: [f.name for f in dataclasses.fields(section)] for name, section in sections.items()}
    out: list[str] = []
    current: str | None = None

    def close_section() -> None:
        if current in pending:
            out.extend(f"{key} = {toml_value(getattr(sections[current], key))}" for key in pending.pop(current))

    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if (m := _SECTION.match(line)):
            close_section()
            current = m.group(1)
        elif current in pending and (k := _KEY.match(line)) and k.group(1) in pending[current]:
            key = k.group(1)
            pending[current].remove(key)
            line = f"{key} = {toml_value(getattr(sections[current], key))}"
        out.append(line)
    close_section()
    for name in list(pending):  # a section the template lacks
        out += ["", f"[{name}]"] + [f"{key} = {toml_value(getattr(sections[name], key))}" for key in pending.pop(name)]
    text = "\n".join(out) + "\n"
    if config_mod.build(tomllib.loads(text)).replace(source=None) != config.replace(source=None):
        raise AssertionError("the configuration written does not load back to the same values")  # pragma: no cover
    return text


def write(path: Path, config: Config) -> None:
    """``render`` into ``path``, mode 0640 (not secret to the service's group: mailserver/datadir.py)."""
    text = render(config)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o640)

"""Notice types: ``templates/<id>/notice.toml`` (definition) beside its templates.

The ids and field names are the interface agencies export against (NOTICES.md): keep them stable.
"""
from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mailserver.errors import ConfigError, NotFound

from .checks import CompiledCheck, compile_check

FIELD_TYPES = ("text", "date", "money", "int")
#: every drop row may carry these beside the notice type's own fields (NOTICES.md)
COMMON_FIELDS = (("reference", "text", False), ("id_number", "text", True), ("name", "text", True))
TEMPLATE_FILES = ("subject", "body.txt", "body.html")
_COLUMN_NOISE = re.compile(r"[\s_\-]+")


def column_key(name: str) -> str:
    """A column name as matched: case, spaces, '-' and '_' ignored ("ID Number" = "id_number")."""
    return _COLUMN_NOISE.sub("", name).lower()

KINDS = ("reminder", "notification", "notice", "application", "statement", "bulletin")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool = True
    min: str | int | None = None
    max: str | int | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class Check:
    rule: str
    message: str


@dataclass(frozen=True)
class NoticeDefinition:
    id: str
    agency: str
    kind: str
    mandatory: bool
    title: str
    fields: tuple[FieldSpec, ...]
    checks: tuple[Check, ...]
    folder: Path

    def as_row(self) -> dict:
        return {"id": self.id, "agency": self.agency, "kind": self.kind, "mandatory": self.mandatory, "title": self.title}

    @cached_property
    def all_fields(self) -> tuple[FieldSpec, ...]:
        """reference, id_number, name, then the type's own fields: what a row may carry."""
        return tuple(FieldSpec(n, t, r) for n, t, r in COMMON_FIELDS) + self.fields

    @cached_property
    def compiled_checks(self) -> tuple[CompiledCheck, ...]:
        types = {f.name: f.type for f in self.fields}
        return tuple(compile_check(c.rule, c.message, types) for c in self.checks)

    @property
    def opt_out_subject(self) -> str:
        """The subject of a mail to the statements address that opts out of this type."""
        return f"unsubscribe {self.id}"

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.all_fields if f.required)


def load_definition(folder: Path) -> NoticeDefinition:
    path = folder / "notice.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        fields = tuple(
            FieldSpec(name=name, type=spec["type"], required=spec.get("required", True), min=spec.get("min"),
                      max=spec.get("max"), pattern=spec.get("pattern"))
            for name, spec in data.get("fields", {}).items()
        )
        definition = NoticeDefinition(
            id=data["id"], agency=data["agency"], kind=data["kind"], mandatory=bool(data["mandatory"]),
            title=data["title"], fields=fields,
            checks=tuple(Check(c["rule"], c["message"]) for c in data.get("checks", [])), folder=folder,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: missing or malformed {exc}") from None
    if definition.id != folder.name:
        raise ConfigError(f"{path}: id {definition.id!r} differs from its folder name")
    if definition.kind not in KINDS:
        raise ConfigError(f"{path}: kind {definition.kind!r} is not one of {', '.join(KINDS)}")
    for f in fields:
        if f.type not in FIELD_TYPES:
            raise ConfigError(f"{path}: field {f.name}: type {f.type!r} is not one of {', '.join(FIELD_TYPES)}")
    try:
        definition.compiled_checks
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    missing = [name for name in TEMPLATE_FILES if not (folder / name).exists()]
    if missing:
        raise ConfigError(f"{path}: template files missing: {', '.join(missing)}")
    return definition


def load_catalog(templates_dir: Path) -> dict[str, NoticeDefinition]:
    """Every notice type under ``templates_dir``, by id."""
    if not templates_dir.is_dir():
        raise ConfigError(f"{templates_dir}: notice-type folder missing")
    return {d.id: d for d in (load_definition(p) for p in sorted(templates_dir.iterdir()) if (p / "notice.toml").exists())}


def get_definition(catalog: dict[str, NoticeDefinition], notice_type: str) -> NoticeDefinition:
    try:
        return catalog[notice_type]
    except KeyError:
        raise NotFound(f"unknown notice type {notice_type!r} (known: {', '.join(sorted(catalog))})") from None


def sample_people(catalog: dict[str, NoticeDefinition]) -> dict[str, str]:
    """ID number -> name of everyone in the sample drops (``<id>/sample.csv``), in ID-number
    order: the demo city's citizens, so that every sample drop reaches a mailbox."""
    people = {}
    for definition in catalog.values():
        with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                people[row["id_number"]] = row["name"]
    return dict(sorted(people.items()))


def load_agencies(templates_dir: Path) -> dict[str, dict]:
    path = templates_dir / "agencies.toml"
    if not path.exists():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))

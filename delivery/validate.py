"""Stage `validate`: the file's columns first, then every row against the notice type's fields.

Pure: text in, typed values (date, Decimal, int, str) or a list of errors out. Each error names
the column and gives a reason a clerk understands, in Chinese and English.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from mailserver.cells import lost_digits
from mailserver.errors import ValidationError
from mailserver.identity import idnumber

from . import reasons
from .catalog import FieldSpec, NoticeDefinition, column_key
from .read import ROW_ERROR, FileError

DATE_FORMS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})\Z"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})\Z"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日\Z"),
)
MONEY = re.compile(r"^-?(\d{1,3}(,\d{3})+|\d+)(\.\d{1,2})?\Z")
INT = re.compile(r"^[+-]?\d+\Z")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class RowError:
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.column}: {self.reason}"


def column_mapping(definition: NoticeDefinition, columns: list[str]) -> dict[str, str]:
    """field name -> the file's column name. FileError naming every required column missing."""
    by_key: dict[str, str] = {}
    for col in columns:
        by_key.setdefault(column_key(col), col)
    mapping = {f.name: by_key[column_key(f.name)] for f in definition.all_fields if column_key(f.name) in by_key}
    missing = [name for name in definition.required_columns if name not in mapping]
    if missing:
        raise FileError(reasons.MISSING_COLUMNS.format(columns=", ".join(missing)))
    return mapping


def parse_date(text: str) -> dt.date:
    for form in DATE_FORMS:
        m = form.match(text)
        if m:
            try:
                return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                raise ValidationError(reasons.NOT_A_DATE.format(text=text)) from None
    raise ValidationError(reasons.BAD_DATE.format(text=text))


def parse_money(text: str) -> Decimal:
    value = text.replace("¥", "").replace("￥", "").replace(" ", "").replace("元", "")
    if not MONEY.match(value):
        raise ValidationError(reasons.BAD_MONEY.format(text=text))
    try:
        return Decimal(value.replace(",", "")).quantize(CENT)
    except InvalidOperation:  # pragma: no cover - the pattern already rules this out
        raise ValidationError(reasons.BAD_MONEY.format(text=text)) from None


def parse_int(text: str) -> int:
    if not INT.match(text):
        raise ValidationError(reasons.BAD_INT.format(text=text))
    return int(text)


def parse_field(spec: FieldSpec, text: str):
    if spec.type == "date":
        value = parse_date(text)
    elif spec.type == "money":
        value = parse_money(text)
    elif spec.type == "int":
        value = parse_int(text)
    else:
        value = text
        if spec.pattern and not re.fullmatch(spec.pattern, text):
            raise ValidationError(reasons.BAD_PATTERN.format(pattern=spec.pattern, text=text))
    if spec.min is not None and spec.type in ("money", "int"):
        low = Decimal(str(spec.min))
        if value < low:
            raise ValidationError(reasons.TOO_SMALL.format(limit=spec.min, text=text))
    if spec.max is not None and spec.type in ("money", "int"):
        high = Decimal(str(spec.max))
        if value > high:
            raise ValidationError(reasons.TOO_LARGE.format(limit=spec.max, text=text))
    return value


def validate_row(definition: NoticeDefinition, mapping: dict[str, str], cells: dict[str, str]):
    """(values by field name, errors). values["id_number"] is the normalised number."""
    errors: list[RowError] = []
    if ROW_ERROR in cells:
        return {}, [RowError("row", cells[ROW_ERROR])]
    if "\0extra" in cells:
        extra = cells["\0extra"]
        errors.append(RowError("row", reasons.EXTRA_CELLS.format(detail=extra)))
    values: dict = {}
    for spec in definition.all_fields:
        column = mapping.get(spec.name)
        text = (cells.get(column) or "").strip() if column else ""
        if not text:
            if spec.required:
                errors.append(RowError(spec.name, reasons.REQUIRED_EMPTY))
            values[spec.name] = None
            continue
        try:
            if spec.name == "id_number":
                if lost_digits(text):  # a number cell of 16+ digits, as cells.cell_text shows it
                    errors.append(RowError(spec.name, reasons.ID_NUMBER_IN_NUMBER_CELL))
                    values[spec.name] = None
                    continue
                values[spec.name] = idnumber.normalize(text)
            else:
                values[spec.name] = parse_field(spec, text)
        except ValidationError as exc:
            reason = str(exc)
            if spec.name == "id_number":
                reason = reasons.ID_NUMBER_PREFIX + reason
            errors.append(RowError(spec.name, reason))
    if not errors:
        for check in definition.compiled_checks:
            if not check.passes(values):
                errors.append(RowError(check.fields[-1], check.message))
    return values, errors

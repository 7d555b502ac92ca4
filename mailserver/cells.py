"""Spreadsheet cells as text, both ways: how a cell a clerk saved from Excel becomes text (drops,
delivery/read.py, and citizen imports, registry/bulk.py), and how text we write becomes a cell a
clerk opens in Excel (every CSV the product writes goes through ``spreadsheet_writer``)."""
from __future__ import annotations

import csv
import datetime as dt
import re
from decimal import Decimal
from typing import Any, Iterable, TextIO

#: how cell_text shows a number cell of 16 or more digits ("1.10105199001011E+17")
_LOST_DIGITS = re.compile(r"-?\d(\.\d+)?E\+\d+")


def cell_text(value: object) -> str:
    """A cell as the text a clerk sees: dates as YYYY-MM-DD, whole floats without '.0'."""
    if value.__class__ is str:  # every cell of a CSV: the fast path of a million-row file
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        if abs(value) >= 1e15:
            # Excel keeps 15 significant digits: an 18-digit ID number typed into a number cell
            # has lost its last digits. Shown as Excel shows it, never as a plausible number.
            return format(value, ".15G")
        return str(int(value)) if value.is_integer() else str(Decimal(repr(value)))
    return str(value)


def lost_digits(text: str) -> bool:
    """Is this cell_text of a number Excel could not keep whole (an ID number in a number cell)?"""
    return _LOST_DIGITS.fullmatch(text) is not None


#: a cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection): the
#: ASCII ones, the line breaks, and the full-width forms a Chinese input method types
FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
#: leading characters a spreadsheet may skip before it sees the formula
_BLANK = " \u3000"
#: a plain number, signed, with thousands separators ("-1,268.40"): a negative amount stays a
#: number a clerk can add up (no letters: it cannot name a function, a reference or a DDE server)
_PLAIN_NUMBER = re.compile(r"[+-]?\.?[0-9][0-9.,]*\Z")
#: a cell not starting with one of these is safe as it is (nearly every cell: one look at its first character)
_LOOK_FURTHER = FORMULA_START | frozenset(_BLANK)


def safe_cell(value: Any) -> Any:
    """A cell as a spreadsheet will not run it: text that would start a formula gets a leading
    single quote (which Excel shows as "text follows"); numbers and plain numeric text pass."""
    if value.__class__ is not str or not value or value[0] not in _LOOK_FURTHER:
        return value
    first = value.lstrip(_BLANK)[:1]
    if first in FORMULA_START and _PLAIN_NUMBER.match(value) is None:
        return "'" + value
    return value


class SpreadsheetWriter:
    """The one CSV writer of files a clerk opens (reports, paper-mail exports, activation codes,
    tallies): ``csv.writer`` (same arguments) whose every cell went through ``safe_cell``."""

    def __init__(self, fh: TextIO, **fmt: Any) -> None:
        self._writer = csv.writer(fh, **fmt)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(map(safe_cell, row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


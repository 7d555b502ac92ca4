"""Spreadsheet cells as text: one rule for drops (delivery/read.py) and citizen imports
(registry/bulk.py), which both read what clerks save from Excel."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

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

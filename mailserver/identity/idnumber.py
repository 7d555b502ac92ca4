"""Resident ID numbers (GB 11643-1999): 18 characters, the last a checksum digit or X."""
from __future__ import annotations

import datetime as _dt
import re
from operator import mul

from ..errors import ValidationError

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"


def check_char(first17: str) -> str:
    """The checksum character for the first 17 digits."""
    total = sum(map(mul, map(int, first17), WEIGHTS))
    return CHECK_CHARS[total % 11]


def normalize(raw: str) -> str:
    """Return the canonical form (upper-case X, no spaces) or raise ValidationError.

    Error messages never repeat the number itself: they end up in reports and logs.
    """
    value = (raw or "").strip().replace(" ", "").upper()
    if len(value) != 18:
        raise ValidationError(f"ID number must have 18 characters, not {len(value)}")
    if not value[:17].isdigit() or not value[:17].isascii():
        raise ValidationError("ID number: the first 17 characters must be digits")
    if not (value[17].isdigit() and value[17].isascii()) and value[17] != "X":
        raise ValidationError("ID number: the last character must be a digit or X")
    try:
        _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise ValidationError("ID number: the birth date in it is not a real date") from None
    if check_char(value[:17]) != value[17]:
        raise ValidationError("ID number: checksum does not match (a digit is mistyped)")
    return value


def is_valid(raw: str) -> bool:
    try:
        normalize(raw)
    except ValidationError:
        return False
    return True


def make(region: str, birth: _dt.date, sequence: int) -> str:
    """Build a valid number (for demos, tests and benchmarks): 6-digit region, birth date, 3-digit sequence."""
    first17 = f"{region:0>6}{birth:%Y%m%d}{sequence % 1000:03d}"
    return first17 + check_char(first17)


def mask(number: str) -> str:
    """What may be shown to a person who is not the citizen: region and last two characters."""
    return number[:3] + "*" * 13 + number[-2:]


#: what looks like an ID number (18 characters, or the old 15 digits), a bank card or an account
#: number: 15 or more digits in a run (spaces or hyphens may group them) with an optional final X,
#: or such a number as Excel shows a number cell of it (3.30106198102013E+17)
_LONG_NUMBER = re.compile(r"(?<!\d)\d(?:[ -]?\d){14,}(?:[ -]?[XxＸｘ])?(?![\dXxＸｘ])"
                          r"|(?<!\d)\d\.\d{13,}[Ee]\+?\d+")
NUMBER_HIDDEN = "[隐去的长号码 / long number hidden]"


def hide_numbers(text: str) -> str:
    """``text`` with every long number in it (an ID number, wherever a clerk typed it) replaced."""
    return _LONG_NUMBER.sub(NUMBER_HIDDEN, text)

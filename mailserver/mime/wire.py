"""IMAP wire syntax for the strings in ENVELOPE and BODYSTRUCTURE (RFC 3501 4.3, 9).

A value goes out as a quoted string when it is short printable 7-bit text (tabs allowed), and as
a literal ``{n}\\r\\n...`` otherwise (n counts the UTF-8 bytes), since IMAP4rev1 quoted strings
may not carry 8-bit characters.
"""
from __future__ import annotations

from collections.abc import Sequence

from .headers import cached_if_short

NIL = "NIL"
#: longer values go as literals: some clients cap the length of a quoted string they accept
MAX_QUOTED = 1000


def string(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "")  # NUL may appear in no IMAP string (nor in PostgreSQL text)
    printable = (value.replace("\t", " ") if "\t" in value else value).isprintable()
    if value.isascii() and printable and len(value) <= MAX_QUOTED:
        if "\\" in value or '"' in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{value}"'
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates cannot be sent (nor stored)
        value = value.encode("utf-8", "replace").decode("utf-8")
        size = len(value.encode("utf-8"))
    return f"{{{size}}}\r\n{value}"


@cached_if_short(maxsize=1024, limit=64)
def token(value: str) -> str:
    """string() of the few values every message repeats: types, parameter names, charsets."""
    return string(value)


def nstring(value: str | None) -> str:
    return NIL if value is None else string(value)


def string_list(values: list[str]) -> str:
    """One string, or a parenthesised list of several (body-fld-lang); NIL when empty."""
    if not values:
        return NIL
    if len(values) == 1:
        return string(values[0])
    return "(" + " ".join(string(v) for v in values) + ")"


def param_list(params: Sequence[tuple[str, str]]) -> str:
    """body-fld-param: ("NAME" "value" ...) with upper-cased names, or NIL."""
    if not params:
        return NIL
    return "(" + " ".join(f"{token(name.upper())} {token(value) if name == 'charset' else string(value)}"
                          for name, value in params) + ")"

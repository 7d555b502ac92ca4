"""Cross-field checks of a notice definition: ``"a + b == c"`` (sums of money or int fields
compared with ==, <= or >=). Parsed once at load time; never ``eval``: agencies' files feed them."""
from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.errors import ConfigError

COMPARATORS = ("==", "<=", ">=")
TERM = re.compile(r"\s*([+-]?)\s*([a-z_][a-z0-9_]*)\s*")


@dataclass(frozen=True)
class Sum:
    #: (sign, field name): +1 or -1
    terms: tuple[tuple[int, str], ...]

    def value(self, values: dict):
        total = 0
        for sign, name in self.terms:
            v = values.get(name)
            if v is None:
                return None
            total = total + v if sign > 0 else total - v
        return total


@dataclass(frozen=True)
class CompiledCheck:
    left: Sum
    op: str
    right: Sum
    message: str

    def passes(self, values: dict) -> bool:
        a, b = self.left.value(values), self.right.value(values)
        if a is None or b is None:  # an optional field is absent: nothing to compare
            return True
        return a == b if self.op == "==" else a <= b if self.op == "<=" else a >= b

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(n for _, n in self.left.terms + self.right.terms)


def _parse_sum(text: str, rule: str) -> Sum:
    terms, pos = [], 0
    text = text.strip()
    if text and text[0] not in "+-":
        text = "+" + text
    while pos < len(text):
        m = TERM.match(text, pos)
        if not m or m.end() == pos or not m.group(1):
            raise ConfigError(f"check {rule!r}: expected field names joined by + or -")
        terms.append((1 if m.group(1) == "+" else -1, m.group(2)))
        pos = m.end()
    if not terms:
        raise ConfigError(f"check {rule!r}: a side is empty")
    return Sum(tuple(terms))


def compile_check(rule: str, message: str, field_types: dict[str, str]) -> CompiledCheck:
    for op in COMPARATORS:
        if op in rule:
            left, right = rule.split(op, 1)
            check = CompiledCheck(_parse_sum(left, rule), op, _parse_sum(right, rule), message)
            for name in check.fields:
                if field_types.get(name) not in ("money", "int"):
                    raise ConfigError(f"check {rule!r}: {name} is not a money or int field")
            return check
    raise ConfigError(f"check {rule!r}: no comparison ({', '.join(COMPARATORS)})")

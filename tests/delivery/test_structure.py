"""The structure the pipeline stores without parsing (``delivery.structure``) equals what
``mailserver.mime.analyze`` gives for the same bytes: every sample row of every notice type, and
generated rows with names and values that fold, quote, escape or stretch the header."""
from __future__ import annotations

import csv
import random

import pytest

from delivery.compose import B64_LINE, _base64_lines, compose_notice
from delivery.pipeline import RowContext, RunSpec
from delivery.runner import agency_info
from delivery.validate import column_mapping, validate_row
from mailserver.bench.util import GIVEN, SURNAMES
from mailserver.mime import analyze

from drophelpers import CATALOG

DATE = "Fri, 27 Nov 2026 10:00:00 +0800"
FIELDS = ("size", "header_size", "envelope", "body", "bodystructure", "search_text", "sort")


def _context(registry, notice_type: str, columns: list[str]) -> RowContext:
    definition = CATALOG[notice_type]
    spec = RunSpec(registry.config, notice_type, agency_info(registry, definition.agency, notice_type),
                   column_mapping(definition, columns))
    return RowContext(spec, registry.store)


def _assert_same(ctx: RowContext, values: dict, name: str, address: str, key: str) -> None:
    rendered = ctx.renderer.render(values, address)
    notice = compose_notice(ctx.skeleton, rendered, name, address, key, DATE)
    raw = ctx.trace_header + notice.raw
    fast, slow = ctx.structure.analyzed(notice), analyze(raw)
    for f in FIELDS:
        assert getattr(fast, f) == getattr(slow, f), (f, name, getattr(fast, f), getattr(slow, f))


def test_every_sample_row_of_every_type(sqlite_registry, sqlite_city):
    for notice_type, definition in CATALOG.items():
        with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        ctx = _context(sqlite_registry, notice_type, list(rows[0]))
        for i, row in enumerate(rows):
            values, errors = validate_row(ctx.definition, ctx.spec.mapping, row)
            assert errors == []
            _assert_same(ctx, values, row["name"], sqlite_city[row["id_number"]], f"{i:032x}")


HARD_NAMES = ["王", "欧阳" * 8, "欧阳" * 30, "Zhang Wei", 'Zhang "Wei" \\ Jr.', "<b>王</b>五", "José Müller",
              "A" * 120, "王 五", "=?utf-8?b?5Lqk?="]


@pytest.mark.parametrize("notice_type", ["licence-renewal", "medical-statement", "owner-contact-change"])
def test_generated_rows_with_hard_values(sqlite_registry, sqlite_city, notice_type):
    definition = CATALOG[notice_type]
    with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
        base = next(csv.DictReader(fh))
    ctx = _context(sqlite_registry, notice_type, list(base))
    values, errors = validate_row(definition, ctx.spec.mapping, base)
    assert errors == []
    rng = random.Random(5)
    names = HARD_NAMES + ["".join(rng.choice(SURNAMES + GIVEN) for _ in range(rng.randrange(1, 40)))
                          for _ in range(40)]
    text_fields = [f.name for f in definition.fields if f.type == "text"]
    for i, name in enumerate(names):
        row = dict(values, name=name)
        for field in text_fields:  # long values fold the subject and grow the parts
            row[field] = rng.choice(["甲", "长" * rng.randrange(1, 400), "x & <y>", "地址 " * 50,
                                     "line\u2028break", "tab\there"])
        address = rng.choice(["a.b@hz.example.cn", "ouyang.wei.123@civic.example", "x@y.example"])
        _assert_same(ctx, row, name, address, f"{i:032x}")


def test_base64_lines_are_what_the_stdlib_makes():
    import base64

    for n in (0, 1, 56, 57, 58, 114, 1000, 4096):
        data = bytes(range(256)) * (n // 256 + 1)
        data = data[:n]
        assert _base64_lines(data) == base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
    assert B64_LINE == 76


def test_encoded_words_cut_where_the_character_by_character_reference_cuts():
    from delivery.compose import encoded_words_reference, encoded_words

    rng = random.Random(11)
    alphabet = "a Z1中文字𠀋é€\u00a0" + SURNAMES
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        first = rng.choice((4, 9, 36, 45))
        assert encoded_words(value, first) == encoded_words_reference(value, first), value


TRICKY_ADDRESSES = ["a.b@hz.example.cn", '"wang wu"@example.cn', "a(b)@example.cn", "x=?y@example.cn",
                    "a;b@example.cn", "a\\b@example.cn", "a[1]@example.cn", "a@b@example.cn", "zhang@[10.0.0.1]"]


def test_the_to_field_known_without_parsing_equals_the_parsers(sqlite_registry, sqlite_city):
    """The To a citizen's notice carries is read from the name and address compose made it of
    (``structure._to_fields``) only where the parser would find exactly those: every other
    address, and every name that is not one encoded word, goes through the parser; all equal
    ``analyze``."""
    definition = CATALOG["licence-renewal"]
    with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
        base = next(csv.DictReader(fh))
    ctx = _context(sqlite_registry, "licence-renewal", list(base))
    values, errors = validate_row(definition, ctx.spec.mapping, base)
    assert errors == []
    for i, (name, address) in enumerate((n, a) for n in ("王五", "欧阳" * 30, "王 五", "\u3000", "Zhang Wei", "")
                                        for a in TRICKY_ADDRESSES):
        _assert_same(ctx, dict(values, name=name), name, address, f"{i:032x}")

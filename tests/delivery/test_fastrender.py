"""Flattened templates (``delivery.fastrender``) render exactly what Jinja renders: every sample
row of every notice type, and rows whose values escape, are missing, are numbers or dates, or
are long; a template with anything else (``if``, arithmetic, calls) is left to Jinja."""
from __future__ import annotations

import csv
import datetime as dt
import random
from decimal import Decimal

import pytest
from jinja2 import DictLoader

from delivery.fastrender import Unsupported, flatten
from delivery.render import AgencyInfo, Renderer, Rendered, _render, make_environment
from delivery.validate import column_mapping, validate_row

from drophelpers import CATALOG, TEMPLATES

AGENCY = AgencyInfo(id="traffic-police", name="示例市公安局交通警察支队 <&>", sender="jj@civic.example",
                    phone="0571-12345", address="江南大道100号", hours="工作日 9:00-17:00",
                    website="https://jj.civic.example/?a=1&b=2", apply_address="apply@civic.example")
#: the types whose body templates use `if` or arithmetic on row fields: Jinja renders those
NOT_FLAT = {"driver-contact-change", "owner-contact-change", "overdue-fine"}


def _renderer(notice_type: str) -> Renderer:
    return Renderer(TEMPLATES, CATALOG[notice_type], AGENCY, "示例市", "civic.example")


def _jinja(r: Renderer, values: dict, address: str) -> Rendered:
    """What Jinja alone renders (the path every notice took before fastrender)."""
    ctx = r.context(values, address)
    return Rendered(" ".join(_render(r.subject, ctx).split()), _render(r.text, ctx), _render(r.html, ctx))


def _sample_values(notice_type: str) -> list[dict]:
    definition = CATALOG[notice_type]
    with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    mapping = column_mapping(definition, list(rows[0]))
    out = []
    for row in rows:
        values, errors = validate_row(definition, mapping, row)
        assert errors == []
        out.append(values)
    return out


@pytest.mark.parametrize("notice_type", sorted(CATALOG))
def test_every_sample_row_renders_as_jinja_renders_it(notice_type):
    r = _renderer(notice_type)
    flat = [t is not None for t in (r.flat_subject, r.flat_text, r.flat_html)]
    assert all(flat) == (notice_type not in NOT_FLAT), flat
    assert r.flat_subject is not None  # every subject is flat
    for values in _sample_values(notice_type):
        assert r.render(values, "a@civic.example") == _jinja(r, values, "a@civic.example")


@pytest.mark.parametrize("notice_type", sorted(set(CATALOG) - NOT_FLAT))
def test_hard_values_render_as_jinja_renders_them(notice_type):
    r = _renderer(notice_type)
    rng = random.Random(13)
    base = _sample_values(notice_type)[0]
    hard = ["<b>王</b> & 'x' \"y\"", "", "  spaced\tout  ", "长" * 300, "line\nbreak\r\n", "{{ name }}",
            "{% if %}", "%s %(x)s {0}", None, Decimal("1234567.5"), 0, dt.date(2026, 2, 3), "\u2028\x00"]
    for _ in range(60):
        values = dict(base)
        for name in values:
            if rng.random() < 0.5:
                values[name] = rng.choice(hard)
        got = r.render(values, "a@civic.example")
        assert got == _jinja(r, values, "a@civic.example"), values


def test_a_row_without_a_field_goes_to_jinja_and_fails_there():
    from delivery.render import RenderError

    r = _renderer("licence-renewal")
    values = _sample_values("licence-renewal")[0]
    del values["expiry_date"]
    with pytest.raises(RenderError):
        r.render(values, "a@civic.example")


@pytest.mark.parametrize("source", [
    "{% if x %}a{% endif %}", "{{ x + 1 }}", "{{ x|upper }}", "{{ range(3) }}", "{{ x.attr }}", "{{ undefined_name }}",
    "{% set y = 1 %}{{ x }}", "{{ x|cn_date('a') }}", '{% block b %}{{ super() }}{% endblock %}',
    "{% for i in x %}{{ i }}{% endfor %}", "{{ self.b() }}", "{% include 'other' %}",
])
def test_what_is_not_flattened(source):
    env = make_environment(TEMPLATES)
    env.loader = DictLoader({"t": source, "other": "x"})
    with pytest.raises(Unsupported):
        flatten(env, "t", {"c": "const"}, frozenset({"x"}))


def test_extends_and_nested_blocks_flatten_as_jinja_renders_them():
    env = make_environment(TEMPLATES)
    env.loader = DictLoader({
        "layout.html": "<p>{{ c.name }}</p>{% block a %}A{% block inner %}I{% endblock %}{% endblock %}|"
                       "{% block b %}B{% endblock %}{{ 'lit<' }}",
        "mid.html": "{% extends 'layout.html' %}{% block inner %}[{{ x }}]{% endblock %}",
        "child.html": "{% extends 'mid.html' %}ignored {{ x }}{% block b %}{{ x|cn_date }}&{{ y }}{% endblock %}",
    })
    constants = {"c": AGENCY}
    flat = flatten(env, "child.html", constants, frozenset({"x", "y"}))
    for x, y in ((dt.date(2026, 1, 2), "<i>"), ("a&b", None)):
        expected = env.get_template("child.html").render(dict(constants, x=x, y=y))
        assert flat.render({"x": x, "y": y}) == expected

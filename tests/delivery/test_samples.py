"""Every notice type's sample drop renders and delivers; each message parses back with no defects,
equals the EmailMessage oracle, decodes its Chinese subject, and says the same in text and HTML."""
from __future__ import annotations

import csv
import email
import datetime as dt
import html
import re

import pytest
from email.header import decode_header, make_header
from sqlalchemy import select

from delivery.compose import Skeleton, compose, compose_slow
from delivery.pipeline import RowContext, RunSpec
from delivery.render import cn_date, yuan
from delivery.runner import agency_info, run_drop
from delivery.validate import column_mapping, validate_row
from mailserver.mime import analyze
from mailserver.store import bodies
from mailserver.store.models import Content, DropRow

from drophelpers import CATALOG
from mailcheck import defects, inbox_messages, parse, same_message

CJK = re.compile(r"[\u4e00-\u9fff]")


def shown(spec, value) -> str:
    """A value as the templates show it."""
    if spec.type == "date":
        return cn_date(value)
    if spec.type == "money":
        return yuan(value)
    return str(value)


def test_every_sample_drop_delivers(registry, city):
    assert len(CATALOG) == 13
    for notice_type, definition in CATALOG.items():
        path = definition.folder / "sample.csv"
        result = run_drop(registry, path, definition.agency, notice_type)
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert result.summary.counts == {"delivered": len(rows)}, notice_type
        agency = agency_info(registry, definition.agency, notice_type)
        with registry.store.reader() as s:
            assert set(s.scalars(select(DropRow.status).where(DropRow.drop_id == result.drop_id))) == {"delivered"}
        for row in rows:
            raws = [r for r in inbox_messages(registry.store, city[row["id_number"]])
                    if f"X-Civicmail-Notice-Type: {notice_type}\r\n".encode() in r]
            assert len(raws) == 1, (notice_type, row["name"])
            raw = raws[0]
            assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
            msg = parse(raw)
            assert defects(msg) == [], notice_type
            subject = str(msg["Subject"])
            assert CJK.search(subject) and "=?" not in subject, subject
            assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0]  # encoded as RFC 2047 words on the wire
            assert msg["From"].addresses[0].display_name == agency.name
            assert msg["To"].addresses[0].display_name == row["name"]
            assert msg["Auto-Submitted"] == "auto-generated"
            assert ("List-Unsubscribe" in msg) == (not definition.mandatory)
            assert msg["Authentication-Results"].startswith(registry.config.server.hostname)
            text = msg.get_body(("plain",)).get_content()
            page = html.unescape(msg.get_body(("html",)).get_content())
            values, errors = validate_row(definition, column_mapping(definition, list(row)), row)
            assert errors == []
            for spec in definition.fields:
                if values[spec.name] is not None:
                    fact = shown(spec, values[spec.name])
                    assert fact in text and fact in page, (notice_type, spec.name, fact)
            assert row["name"] in text and row["name"] in page
            assert agency.phone and agency.phone in text and agency.phone in page


def test_fast_notice_equals_the_emailmessage_oracle(registry, city):
    """The skeleton-assembled bytes against EmailMessage built the slow way, for every sample row."""
    for notice_type, definition in CATALOG.items():
        path = definition.folder / "sample.csv"
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        mapping = column_mapping(definition, list(rows[0]))
        ctx = RowContext(RunSpec(registry.config, notice_type, agency_info(registry, definition.agency, notice_type),
                                 mapping), registry.store)
        skel = Skeleton.build(definition, ctx.spec.agency, registry.config.city.domain)
        assert skel == ctx.skeleton
        for row in rows:
            values, _ = validate_row(definition, mapping, row)
            rendered = ctx.renderer.render(values, city[row["id_number"]])
            args = (skel, rendered, row["name"], city[row["id_number"]], "ab" * 32, "Fri, 27 Nov 2026 10:00:00 +0800")
            fast = parse(compose(*args))
            slow = parse(compose_slow(*args).as_bytes())
            assert defects(fast) == [] and defects(slow) == []
            same_message(fast, slow)


def test_stored_structure_is_what_analyze_gives(registry, city):
    definition = CATALOG["medical-statement"]
    run_drop(registry, definition.folder / "sample.csv", definition.agency, definition.id)
    with registry.store.reader() as s:
        contents = s.scalars(select(Content)).all()
        assert contents
        for c in contents:
            a = analyze(bodies.body(registry.store, c.raw, c.blob_key))
            assert (c.size, c.header_size, c.envelope, c.body, c.bodystructure, c.search_text) == \
                (a.size, a.header_size, a.envelope, a.body, a.bodystructure, a.search_text)


@pytest.mark.parametrize("name", ["<b>王</b>五", 'Zhang "Wei"', "欧阳" * 20])
def test_hard_names_compose_like_the_oracle(registry, city, name):
    definition = CATALOG["licence-renewal"]
    agency = agency_info(registry, definition.agency, definition.id)
    from delivery.render import Renderer

    renderer = Renderer(registry.config.templates_dir, definition, agency, "示例市", "civic.example")
    values = {"reference": None, "id_number": "x", "name": name, "licence_number": "L<1>",
              "expiry_date": dt.date(2027, 1, 2), "office": "车管所 & 分所"}
    rendered = renderer.render(values, "a.b@hz.example.cn")
    assert "L&lt;1&gt;" in rendered.html and "L<1>" not in rendered.html  # autoescaped
    assert "车管所 &amp; 分所" in rendered.html and "L<1>" in rendered.text  # the text part is not
    if "<b>" in name:
        assert "&lt;b&gt;王&lt;/b&gt;五" in rendered.html and "<b>王" not in rendered.html
    skel = Skeleton.build(definition, agency, "hz.example.cn")
    args = (skel, rendered, name, "a.b@hz.example.cn", "cd" * 32, "Fri, 27 Nov 2026 10:00:00 +0800")
    raw = compose(*args)
    fast = parse(raw)
    assert defects(fast) == []
    same_message(fast, parse(compose_slow(*args).as_bytes()))
    # decode_header joins adjacent encoded words as RFC 2047 says (policy.default's address
    # parser puts a space between them: a CPython quirk, the same for the oracle's bytes).
    to = email.message_from_bytes(raw)["To"]
    if name.isascii():
        assert fast["To"].addresses[0].display_name == name
    else:
        assert str(make_header(decode_header(to.rsplit(" <", 1)[0]))) == name

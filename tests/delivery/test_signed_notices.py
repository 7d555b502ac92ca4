"""Signed notices (issue 14 section 3): the pipeline signs each notice with its agency's city-CA
certificate (S/MIME multipart/signed, RFC 8551); `openssl smime -verify` against the city root
verifies a notice fetched over IMAP, and fails on a notice with one byte changed. The structure
the pipeline stores without parsing equals ``analyze`` of the signed bytes."""
from __future__ import annotations

import csv
import imaplib
import shutil
import subprocess

import pytest

from delivery.compose import compose_notice
from delivery.pipeline import RowContext, RunSpec
from delivery.runner import agency_info
from delivery.validate import column_mapping, validate_row
from mailserver.mime import analyze
from mailserver.registry.ca import issue_agency

from dropcli import LICENCE, civicmail, run_drop
from drophelpers import CATALOG
from imap_helpers import imap_server
from tests.cahelpers import make_ca

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")
DATE = "Fri, 27 Nov 2026 10:00:00 +0800"
FIELDS = ("size", "header_size", "envelope", "body", "bodystructure", "search_text", "sort")


def openssl_verify(config, message, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "notice.eml"
    path.write_bytes(message)
    return subprocess.run([OPENSSL, "smime", "-verify", "-CAfile", str(config.data_path("ca-root/root.pem")),
                           "-in", str(path), "-out", str(tmp_path / "content.eml")], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_signed_structure_equals_analyze(sqlite_registry, sqlite_city, key_type):
    registry = sqlite_registry
    registry.config = registry.config.replace(ca=registry.config.ca.__class__(agency_key_type=key_type))
    make_ca(registry.config)
    for notice_type in ("licence-renewal", "medical-statement", "vehicle-inspection"):
        definition = CATALOG[notice_type]
        issue_agency(registry, definition.agency)
        with open(definition.folder / "sample.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        spec = RunSpec(registry.config, notice_type, agency_info(registry, definition.agency, notice_type),
                       column_mapping(definition, list(rows[0])))
        ctx = RowContext(spec, registry.store)
        assert ctx.signer is not None
        for i, row in enumerate(rows):
            values, errors = validate_row(definition, spec.mapping, row)
            assert errors == []
            address = sqlite_city[row["id_number"]]
            notice = compose_notice(ctx.skeleton, ctx.renderer.render(values, address), row["name"], address,
                                    f"{i:032x}", DATE)
            signed = ctx.signer.sign_notice(notice)
            fast, slow = ctx.structure.analyzed(notice, signed), analyze(ctx.trace_header + signed.raw)
            for f in FIELDS:
                assert getattr(fast, f) == getattr(slow, f), (f, getattr(fast, f), getattr(slow, f))
            assert "SIGNED" in fast.bodystructure


def test_no_certificate_means_no_signature(sqlite_registry, sqlite_city):
    make_ca(sqlite_registry.config)  # the CA exists, but the agency was given no certificate
    definition = CATALOG["licence-renewal"]
    agency = agency_info(sqlite_registry, definition.agency, definition.id)
    spec = RunSpec(sqlite_registry.config, definition.id, agency, {})
    assert RowContext(spec, sqlite_registry.store).signer is None


def _fetch_all(config, address: str) -> list[bytes]:
    with imap_server(config) as port:
        with imaplib.IMAP4("127.0.0.1", port) as imap:
            imap.login(address, "citizen-pw-1")
            imap.select("INBOX", readonly=True)
            typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
            assert typ == "OK"
            return [part[1] for part in data if isinstance(part, tuple)]


def test_delivered_notice_verifies_with_openssl_and_tampering_fails(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    make_ca(config)
    issued = civicmail(config, "ca", "issue", "agency", "traffic-police")
    assert issued.returncode == 0, issued.stderr
    done = run_drop(config, LICENCE)
    assert done.returncode == 0, done.stderr
    with open(LICENCE, encoding="utf-8", newline="") as fh:
        address = sqlite_city[next(csv.DictReader(fh))["id_number"]]
    messages = _fetch_all(config, address)
    assert messages
    raw = messages[0]
    assert b"multipart/signed" in raw and b"application/pkcs7-signature" in raw
    ok = openssl_verify(config, raw, tmp_path)
    assert ok.returncode == 0 and "Verification successful" in ok.stderr, ok.stderr
    # the verified content is the notice the citizen reads
    assert b"multipart/alternative" in (tmp_path / "content.eml").read_bytes()
    # one byte changed in the signed text part: the digest no longer matches
    body_at = raw.index(b"Content-Transfer-Encoding: base64\r\n\r\n") + 40
    flipped = bytes([raw[body_at] ^ 0x01]) if chr(raw[body_at] ^ 0x01).isalnum() else b"A"
    tampered = raw[:body_at] + flipped + raw[body_at + 1:]
    assert tampered != raw
    bad = openssl_verify(config, tampered, tmp_path)
    assert bad.returncode != 0 and "Verification successful" not in bad.stderr


def test_signing_off_by_config(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    make_ca(config)
    assert civicmail(config, "ca", "issue", "agency", "traffic-police").returncode == 0
    done = run_drop(config, LICENCE, "--set", "ca.sign_notices=false")
    assert done.returncode == 0, done.stderr
    with open(LICENCE, encoding="utf-8", newline="") as fh:
        address = sqlite_city[next(csv.DictReader(fh))["id_number"]]
    raw = _fetch_all(config, address)[0]
    assert b"multipart/signed" not in raw and b"multipart/alternative" in raw

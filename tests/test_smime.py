"""S/MIME signatures (identity/smime.py): the template signer the pipeline uses gives what
cryptography's PKCS#7 builder gives (the oracle), field by field, for both agency key types; both
verify with openssl and with our verifier; a changed byte fails; a signed whole message splits back
into what was signed."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from asn1crypto import cms

from mailserver.identity.ca import AgencySigner
from mailserver.identity.smime import (BadSignature, TemplateSigner, sign_detached, sign_message, split_signed,
                                       verify_detached)
from tests.cahelpers import make_ca

OPENSSL = shutil.which("openssl")
CONTENT = ("Content-Type: text/plain; charset=utf-8\r\n\r\n" + "您的驾驶证即将到期。\r\n" * 40).encode("utf-8")


@pytest.fixture(params=["ec-p256", "rsa-2048"])
def signer(request, sqlite_config):
    ca = make_ca(sqlite_config)
    issued = ca.issue_agency("traffic-police", "交警支队", ["traffic-police@hz.example.cn"], request.param, 30)
    ca.install_agency(issued)
    return AgencySigner.load(ca.directory, "traffic-police"), sqlite_config


def _fields(der: bytes) -> dict:
    signed = cms.ContentInfo.load(der)["content"]
    signer = signed["signer_infos"][0]
    attrs = {a["type"].native: a["values"].native for a in signer["signed_attrs"]}
    return {"version": signed["version"].native, "digests": signed["digest_algorithms"].dump(),
            "encap": signed["encap_content_info"].dump(), "certificates": signed["certificates"].dump(),
            "signer": (signer["version"].dump(), signer["sid"].dump(), signer["digest_algorithm"].dump(),
                       signer["signature_algorithm"].dump()),
            "attribute order": [a["type"].native for a in signer["signed_attrs"]],
            "content_type": attrs["content_type"], "message_digest": attrs["message_digest"],
            "smime_capabilities": attrs.get("smime_capabilities"), "signing_time": attrs["signing_time"][0]}


def test_template_signer_equals_the_builder(signer):
    agency, _config = signer
    fast = TemplateSigner(agency.key, agency.cert, agency.chain).sign(CONTENT)
    slow = sign_detached(agency.key, agency.cert, agency.chain, CONTENT)
    f, s = _fields(fast), _fields(slow)
    assert abs(f.pop("signing_time") - s.pop("signing_time")) < dt.timedelta(seconds=5)
    assert f == s
    for der in (fast, slow):
        assert verify_detached(CONTENT, der).subject == agency.cert.subject
        with pytest.raises(BadSignature):
            verify_detached(CONTENT.replace("到期".encode(), "过期".encode(), 1), der)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_verifies_the_template_signature(signer, tmp_path):
    agency, config = signer
    (tmp_path / "content").write_bytes(CONTENT)
    (tmp_path / "sig.der").write_bytes(TemplateSigner(agency.key, agency.cert, agency.chain).sign(CONTENT))
    done = subprocess.run([OPENSSL, "smime", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
                           "-content", str(tmp_path / "content"), "-CAfile",
                           str(config.data_path("ca-root/root.pem")), "-out", "/dev/null"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr


def test_signed_message_splits_back(signer):
    agency, _config = signer
    raw = (b"From: a@hz.example.cn\r\nTo: b@hz.example.cn\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n")
    signed = sign_message(agency.key, agency.cert, agency.chain, raw)
    assert sign_message(agency.key, agency.cert, agency.chain, signed) == signed  # signed once only
    entity, der = split_signed(signed)
    assert entity == b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello"
    assert verify_detached(entity, der).subject == agency.cert.subject
    assert split_signed(raw) is None

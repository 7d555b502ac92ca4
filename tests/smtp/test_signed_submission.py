"""An agency's mail submitted over SMTP is S/MIME-signed with its city certificate on submission
(ca.sign_submissions): `openssl smime -verify` against the city root verifies what the citizen
received; an agency without a certificate, or the setting off, leaves mail as it was sent."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mailserver.registry.ca import issue_agency
from tests.cahelpers import make_ca

from .conftest import message
from .test_submission import submit

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")


def _verify(config, raw: bytes, tmp_path) -> subprocess.CompletedProcess:
    (tmp_path / "m.eml").write_bytes(raw)
    return subprocess.run([OPENSSL, "smime", "-verify", "-CAfile", str(config.data_path("ca-root/root.pem")),
                           "-in", str(tmp_path / "m.eml"), "-out", str(tmp_path / "content.eml")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("setting", [True, False])
def test_agency_submission_is_signed_on_submission(server_factory, tmp_path, setting):
    server = server_factory(f"ca.sign_submissions={'true' if setting else 'false'}")
    config, p = server.config, server.people
    make_ca(config)
    issue_agency(server.registry, p.traffic)
    sent = message(p.traffic_sender, p.alice, "signed", body="您的驾驶证即将到期。",
                   extra="Content-Type: text/plain; charset=utf-8\r\nX-Civicmail-Notice-Type: licence-renewal\r\n")
    with submit(server, p.traffic) as c:
        assert c.sendmail(p.traffic_sender, [p.alice], sent) == {}
    with submit(server, p.social) as c:  # no certificate: sent as it was
        plain = message(p.social_sender, p.alice, "unsigned")
        assert c.sendmail(p.social_sender, [p.alice], plain) == {}
    signed, unsigned = server.inbox(p.alice)
    assert b"multipart/signed" not in unsigned and unsigned.endswith(plain)
    if not setting:
        assert b"multipart/signed" not in signed and signed.endswith(sent)
        return
    assert b'multipart/signed; protocol="application/pkcs7-signature"' in signed
    done = _verify(config, signed, tmp_path)
    assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
    content = (tmp_path / "content.eml").read_bytes()
    assert content.startswith(b"Content-Type: text/plain; charset=utf-8")
    assert "您的驾驶证即将到期。".encode() in content
    at = signed.index("即将".encode())
    tampered = signed[:at] + b"X" + signed[at + 1:]
    assert _verify(config, tampered, tmp_path).returncode != 0

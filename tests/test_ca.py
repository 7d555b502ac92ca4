"""The city CA (issue 14 section 3): `civicmail ca` as an operator runs it, the CRL served over
HTTP at the path every certificate names, and `openssl verify -crl_check` against that CRL
rejecting a revoked agency certificate; the root's key kept apart, every issue and revocation
audited."""
from __future__ import annotations

import http.client
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from mailserver.registry.agencies import add_agency
from mailserver.registry.audit import entries
from tests.abuse import city, city_factory  # noqa: F401
from tests.cahelpers import civicmail

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")


def get(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def openssl_verify(ca_dir, cert_pem, crl_pem) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "verify", "-crl_check", "-CAfile", str(ca_dir / "root.pem"),
                           "-untrusted", str(ca_dir / "issuing.pem"), "-CRLfile", str(crl_pem),
                           "-purpose", "smimesign", str(cert_pem)], capture_output=True, text=True, timeout=60)


def fetch_crl(port: int, cert: x509.Certificate, out) -> x509.CertificateRevocationList:
    """The CRL from the distribution point the certificate names (on the test's port), as PEM."""
    point = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    status, headers, body = get(port, urlsplit(point).path)
    assert status == 200 and headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(body)
    from cryptography.hazmat.primitives import serialization

    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return crl


def test_revoked_agency_certificate_fails_openssl_crl_check(city, tmp_path):  # noqa: F811
    config = city.server.config
    port = city.port("citizen services HTTP")
    assert get(port, "/ca/crl.der")[0] == 404  # no CA yet
    registry = city.server.ctx.registry
    add_agency(registry, "tax-bureau", "示例市税务局", ["tax@hz.example.cn"])

    init = civicmail(config, "ca", "init")
    assert init.returncode == 0, init.stderr
    root_dir, ca_dir = config.data_path(config.ca.root_dir), config.data_path(config.ca.dir)
    # the root's key lives apart from what a server reads, readable by its owner only
    assert (root_dir / "root.key").exists() and not (ca_dir / "root.key").exists()
    assert oct((root_dir / "root.key").stat().st_mode & 0o777) == "0o600"
    assert oct(ca_dir.stat().st_mode & 0o777) == "0o700"
    again = civicmail(config, "ca", "init")
    assert again.returncode == 1 and "exists already" in again.stderr

    issued = civicmail(config, "ca", "issue", "agency", "tax-bureau")
    assert issued.returncode == 0, issued.stderr
    cert_pem = ca_dir / "agencies" / "tax-bureau.pem"
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["tax@hz.example.cn"]

    crl_pem = tmp_path / "crl.pem"
    fetch_crl(port, cert, crl_pem)
    ok = openssl_verify(ca_dir, cert_pem, crl_pem)
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr

    serial = format(cert.serial_number, "x")
    revoked = civicmail(config, "ca", "revoke", serial, "--reason", "key_compromise")
    assert revoked.returncode == 0, revoked.stderr
    assert civicmail(config, "ca", "revoke", serial).returncode == 1  # once only

    crl = fetch_crl(port, cert, crl_pem)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    bad = openssl_verify(ca_dir, cert_pem, crl_pem)
    assert bad.returncode != 0 and "certificate revoked" in (bad.stdout + bad.stderr)

    status, headers, body = get(port, "/ca/root.pem")
    assert status == 200 and body == (root_dir / "root.pem").read_bytes()
    root = civicmail(config, "ca", "root")
    assert root.stdout.encode() == body

    listed = civicmail(config, "ca", "list")
    assert serial in listed.stdout and "revoked" in listed.stdout
    actions = [e.action for e in entries(registry.store)[0]]
    assert {"ca.init", "ca.issue.agency", "ca.revoke"} <= set(actions)


def test_citizen_p12_password_alone_on_the_last_line(city, tmp_path):  # noqa: F811
    config = city.server.config
    assert civicmail(config, "ca", "init").returncode == 0
    out = tmp_path / "c.p12"
    done = civicmail(config, "ca", "issue", "citizen", city.addresses[0], "--out", str(out))
    assert done.returncode == 0, done.stderr
    password = done.stdout.splitlines()[-1]
    assert " " not in password and len(password) >= 16
    assert password not in done.stdout.splitlines()[0]
    # openssl opens it with that password (and not without)
    opened = subprocess.run([OPENSSL, "pkcs12", "-in", str(out), "-passin", f"pass:{password}", "-nokeys"],
                            capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0 and "BEGIN CERTIFICATE" in opened.stdout, opened.stderr
    wrong = subprocess.run([OPENSSL, "pkcs12", "-in", str(out), "-passin", "pass:wrong", "-nokeys"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0
    # an existing file is never overwritten; an unknown mailbox is refused
    assert civicmail(config, "ca", "issue", "citizen", city.addresses[0], "--out", str(out)).returncode == 2
    missing = civicmail(config, "ca", "issue", "citizen", "nobody@hz.example.cn", "--out", str(tmp_path / "n.p12"))
    assert missing.returncode == 1 and "no citizen" in missing.stderr
    assert not (tmp_path / "n.p12").exists()


def test_register_on_both_engines(registry):
    """Issue, log in with, revoke and list, on SQLite and PostgreSQL."""
    import datetime as dt

    from cryptography.hazmat.primitives import serialization

    from mailserver.errors import AuthenticationFailed
    from mailserver.identity import idnumber
    from mailserver.registry.ca import (certificate_principal, issue_agency, issue_citizen, list_certificates, revoke,
                                        revoked)
    from mailserver.registry.citizens import add_citizen, disable_account
    from tests.cahelpers import make_ca

    make_ca(registry.config)
    number = idnumber.make("330106", dt.date(1990, 5, 6), 700)
    address = add_citizen(registry, "钱进", number, password="pw-123456").address
    add_agency(registry, "tax-bureau", "税务局", ["tax@hz.example.cn"])
    agency = issue_agency(registry, "tax-bureau")
    citizen, _p12, _password = issue_citizen(registry, address)
    der = citizen.cert.public_bytes(serialization.Encoding.DER)
    principal = certificate_principal(registry, der)
    assert (principal.kind, principal.address) == ("citizen", address)
    with pytest.raises(AuthenticationFailed):  # an agency's certificate logs no one in
        certificate_principal(registry, agency.der)
    revoke(registry, citizen.serial, "superseded")
    with pytest.raises(AuthenticationFailed):
        certificate_principal(registry, der)
    assert [serial for serial, _at, _reason in revoked(registry)] == [citizen.serial]
    assert {(c.kind, c.subject, c.revoked_at is not None) for c in list_certificates(registry)} == {
        ("agency", "tax-bureau", False), ("citizen", address, True)}
    fresh, _p12, _password = issue_citizen(registry, address)
    disable_account(registry, address)
    with pytest.raises(AuthenticationFailed):  # a disabled mailbox: no login, certificate or not
        certificate_principal(registry, fresh.der)

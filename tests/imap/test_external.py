"""Certificate login (issue 14 section 3): IMAPS asks for an optional client certificate from the
city CA; AUTHENTICATE EXTERNAL (RFC 4422 appendix A) with a certificate the city issued, and has
not revoked, logs in as its mailbox: with `openssl s_client` and with Python's ssl holding the
.p12 an operator made with `civicmail ca issue citizen`. A self-made certificate for the same
address does not log in, nor does a revoked one; AUTH=EXTERNAL is listed only where it can work."""
from __future__ import annotations

import datetime as dt
import imaplib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailserver.identity.ca import crl_url
from tests.cahelpers import civicmail, client_tls, open_p12

from .conftest import start_server

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """An IMAP server whose city has a CA (made before the server starts, as `ca init` then a
    restart would), and the first citizen's certificate as the operator issues it."""
    from mailserver.cli.init import prepare
    from tests.conftest import make_config

    tmp = tmp_path_factory.mktemp("external")
    config = make_config(tmp / "data")
    prepare(config)
    init = civicmail(config, "ca", "init")
    assert init.returncode == 0, init.stderr
    running = start_server(config)
    address = running.users[0][0]
    p12 = tmp / "citizen.p12"
    done = civicmail(config, "ca", "issue", "citizen", address, "--out", str(p12))
    assert done.returncode == 0, done.stderr
    assert oct(p12.stat().st_mode & 0o777) == "0o600"
    pem, cert = open_p12(p12.read_bytes(), done.stdout.splitlines()[-1], tmp / "citizen")
    try:
        yield running, config, address, cert, pem, tmp
    finally:
        running._stop()


def _client(port: int, pem: Path | None) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls(pem), timeout=30)


def test_certificate_is_personal_and_never_holds_the_id_number(city):
    running, config, address, cert, pem, tmp = city
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "张伟"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [address]
    ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus and ExtendedKeyUsageOID.CLIENT_AUTH in ekus
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == crl_url(config)
    text = cert.public_bytes(serialization.Encoding.DER)
    assert b"330106" not in text  # the citizen's ID number starts so (conftest): nowhere in it


def test_python_ssl_with_the_p12_logs_in_with_external(city):
    running, config, address, cert, pem, tmp = city
    with _client(running.tls_port, pem) as imap:
        assert "AUTH=EXTERNAL" in imap.capabilities
        typ, data = imap.authenticate("EXTERNAL", lambda challenge: b"")
        assert typ == "OK", data
        typ, data = imap.select("INBOX")
        assert typ == "OK"


def test_external_needs_a_certificate_and_names_no_one_else(city):
    running, config, address, cert, pem, tmp = city
    with _client(running.tls_port, None) as imap:
        assert "AUTH=EXTERNAL" not in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.authenticate("EXTERNAL", lambda challenge: b"")
        assert imap.login(address, "correct horse battery")[0] == "OK"  # the session went on
    with _client(running.tls_port, pem) as imap:
        other = running.users[1][0]
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.authenticate("EXTERNAL", lambda challenge: other.encode())
        # its own address as authorization identity is accepted
        assert imap.authenticate("EXTERNAL", lambda challenge: address.encode())[0] == "OK"
    # the plain listener (STARTTLS) asks for no certificate: no EXTERNAL there
    with imaplib.IMAP4("127.0.0.1", running.port, timeout=30) as imap:
        assert "AUTH=EXTERNAL" not in imap.capabilities


def _s_client(port: int, pem: Path, lines: str) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(pem), "-key", str(pem),
                           "-quiet", "-crlf"], input=lines, capture_output=True, text=True, timeout=60)


def test_openssl_s_client_completes_external_and_a_self_made_certificate_does_not(city):
    running, config, address, cert, pem, tmp = city
    done = _s_client(running.tls_port, pem, "a CAPABILITY\nb AUTHENTICATE EXTERNAL =\nc SELECT INBOX\nd LOGOUT\n")
    assert "AUTH=EXTERNAL" in done.stdout
    assert "\nb OK" in done.stdout, done.stdout + done.stderr
    assert "\nc OK" in done.stdout

    # the same subject and address, signed by its own key: TLS refuses it (it does not chain to
    # the city root), so no command, EXTERNAL or other, is ever answered
    key = ec.generate_private_key(ec.SECP256R1())
    name = cert.subject
    now = dt.datetime.now(dt.timezone.utc)
    fake = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(cert.serial_number).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(key, hashes.SHA256()))
    fake_pem = tmp / "self-made.pem"
    fake_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
                         + fake.public_bytes(serialization.Encoding.PEM))
    refused = _s_client(running.tls_port, fake_pem, "b AUTHENTICATE EXTERNAL =\nd LOGOUT\n")
    assert "b OK" not in refused.stdout
    assert "* OK" not in refused.stdout  # not even the greeting: the handshake failed
    with pytest.raises((ssl.SSLError, OSError, imaplib.IMAP4.abort, EOFError)):
        with _client(running.tls_port, fake_pem) as imap:
            imap.authenticate("EXTERNAL", lambda challenge: b"")


def test_a_revoked_certificate_no_longer_logs_in(city, tmp_path):
    running, config, address, cert, pem, tmp = city
    other = running.users[1][0]
    p12 = tmp_path / "other.p12"
    done = civicmail(config, "ca", "issue", "citizen", other, "--out", str(p12))
    assert done.returncode == 0, done.stderr
    other_pem, other_cert = open_p12(p12.read_bytes(), done.stdout.splitlines()[-1], tmp_path / "other")
    with _client(running.tls_port, other_pem) as imap:
        assert imap.authenticate("EXTERNAL", lambda challenge: b"")[0] == "OK"
    revoked = civicmail(config, "ca", "revoke", format(other_cert.serial_number, "x"), "--reason", "key_compromise")
    assert revoked.returncode == 0, revoked.stderr
    listed = civicmail(config, "ca", "list", "--subject", other)
    assert "revoked" in listed.stdout and "key_compromise" in listed.stdout
    with _client(running.tls_port, other_pem) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.authenticate("EXTERNAL", lambda challenge: b"")

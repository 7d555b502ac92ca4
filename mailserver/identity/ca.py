"""The city's certificate authority: a root, an issuing CA under it, and the certificates the
issuing CA gives agencies (S/MIME signing) and citizens (S/MIME and certificate login).

Files (``ca init``):
- ``ca.root_dir`` (default ``ca-root``): ``root.key``, ``root.pem``. The root's key signs only the
  issuing CA; it is kept apart from what a server reads, like the ID-number keys, and should
  leave the machine after ``ca init`` (the server never opens this folder).
- ``ca.dir`` (default ``ca``): ``root.pem`` (public: what clients install), ``issuing.key``,
  ``issuing.pem``, and each agency's ``agencies/<id>.key`` and ``agencies/<id>.pem``.
Folders are 0700, keys 0600.

Profiles follow RFC 8550 (S/MIME certificates) and RFC 5280: CA certificates carry
basicConstraints (critical) and keyCertSign + cRLSign; an end entity carries digitalSignature
(and keyEncipherment for an RSA key, which can also receive encrypted mail), the EKU
emailProtection (and clientAuth for a citizen: certificate login), its mailbox as an rfc822Name
in subjectAltName, and the CRL distribution point. A citizen's subject is the real name and the
address; an ID number is never written into a certificate.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError, UserError

ROOT_KEY, ROOT_CERT = "root.key", "root.pem"
ISSUING_KEY, ISSUING_CERT = "issuing.key", "issuing.pem"
AGENCIES = "agencies"
#: the path the citizen-services HTTP listener serves the CRL on (web/ca.py)
CRL_PATH = "/ca/crl.der"
ROOT_PATH = "/ca/root.pem"
ROOT_DAYS = 20 * 365
ISSUING_DAYS = 10 * 365
#: how long a published CRL stays valid: clients fetch a fresh one before then
CRL_HOURS = 24
#: RFC 5280 5.3.1 reasons ``ca revoke --reason`` accepts
REASONS = {flag.name: flag for flag in (
    x509.ReasonFlags.unspecified, x509.ReasonFlags.key_compromise, x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.superseded, x509.ReasonFlags.cessation_of_operation)}
AGENCY_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_key(key_type: str):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ConfigError(f"unknown key type {key_type!r} (ec-p256 or rsa-2048)")


def key_type_of(key) -> str:
    return "rsa-2048" if isinstance(key, rsa.RSAPrivateKey) else "ec-p256"


def fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def _leaf_usage(key) -> x509.KeyUsage:
    # RFC 8550 4.4.2: digitalSignature to sign; an RSA key may also receive (keyEncipherment),
    # an EC key would need keyAgreement for that (RFC 5753), which S/MIME clients rarely support
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _ca_name(city: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, city),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, path_length: int, days: int,
                    ekus: list | None = None) -> x509.Certificate:
    """A CA certificate (RFC 5280 4.2.1.9: basicConstraints critical; keyCertSign, cRLSign)."""
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(_ca_usage(), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if issuer != subject:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class Issued:
    """A certificate just issued, with what the store keeps of it."""

    cert: x509.Certificate
    kind: str
    subject: str
    address: str
    key_type: str
    #: an agency's private key, until ``install_agency`` writes it
    key: object = None

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> str:
        return serial_hex(self.cert)


class CityCA:
    """The issuing CA, loaded from ``ca.dir`` (the root's key is never loaded here)."""

    def __init__(self, directory: Path, crl_url: str) -> None:
        self.directory = directory
        self.crl_url = crl_url
        try:
            self.root = x509.load_pem_x509_certificate((directory / ROOT_CERT).read_bytes())
            self.cert = x509.load_pem_x509_certificate((directory / ISSUING_CERT).read_bytes())
            self.key = serialization.load_pem_private_key((directory / ISSUING_KEY).read_bytes(), password=None)
        except FileNotFoundError:
            raise UserError(f"{directory}: no city CA here (run `civicmail ca init`)") from None
        except ValueError as exc:
            raise ConfigError(f"{directory}: damaged CA file ({exc})") from None

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / ISSUING_CERT).exists() and (directory / ISSUING_KEY).exists()

    @classmethod
    def from_config(cls, config) -> "CityCA":
        return cls(config.data_path(config.ca.dir), crl_url(config))

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, root_dir: Path, city: str, domain: str, url: str) -> "CityCA":
        """Make the root (in ``root_dir``) and the issuing CA (in ``directory``). Refuses if
        either is there already: a new root would orphan every certificate clients trust."""
        if (root_dir / ROOT_KEY).exists() or cls.exists(directory):
            raise UserError(f"a city CA exists already ({root_dir / ROOT_KEY} or {directory / ISSUING_CERT})")
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = _ca_name(city, f"{city} Root CA ({domain})")
        root = _ca_certificate(root_name, root_key.public_key(), root_name, root_key, 1, ROOT_DAYS)
        key = ec.generate_private_key(ec.SECP256R1())
        # the issuing CA's EKUs bound what it issues (the de facto rule clients apply to chains)
        issuing = _ca_certificate(_ca_name(city, f"{city} Issuing CA 1 ({domain})"), key.public_key(), root_name,
                                  root_key, 0, ISSUING_DAYS,
                                  [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH])
        _write_private(root_dir / ROOT_KEY, _key_pem(root_key))
        (root_dir / ROOT_CERT).write_bytes(_pem(root))
        _write_private(directory / ISSUING_KEY, _key_pem(key))
        (directory / ISSUING_CERT).write_bytes(_pem(issuing))
        (directory / ROOT_CERT).write_bytes(_pem(root))
        return cls(directory, url)

    # -- issuing -----------------------------------------------------------------------------
    def _leaf(self, subject: x509.Name, key, addresses: list[str], ekus: list, days: int) -> x509.Certificate:
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_leaf_usage(key), critical=True)
                .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(a) for a in addresses]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(self.crl_url)], relative_name=None, reasons=None,
                    crl_issuer=None)]), critical=False)
                .sign(self.key, hashes.SHA256()))

    def issue_agency(self, agency_id: str, agency_name: str, senders: list[str], key_type: str, days: int) -> Issued:
        """An S/MIME signing certificate for the agency's sender addresses (the first is its
        mailbox, the From of its notices). ``install_agency`` then writes it where the pipeline
        finds it (once the store has recorded it)."""
        if not AGENCY_ID.match(agency_id):
            raise UserError(f"{agency_id!r} is not an agency id")
        key = new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency_name),
                             x509.NameAttribute(NameOID.COMMON_NAME, agency_name),
                             x509.NameAttribute(NameOID.EMAIL_ADDRESS, senders[0])])
        cert = self._leaf(subject, key, senders, [ExtendedKeyUsageOID.EMAIL_PROTECTION], days)
        return Issued(cert, "agency", agency_id, senders[0], key_type, key)

    def install_agency(self, issued: Issued) -> Path:
        """Write an agency's key and certificate to ``agencies/<id>.key|.pem``, replacing an
        older one: the pipeline signs with it from its next drop."""
        folder = self.directory / AGENCIES
        _write_private(folder / f"{issued.subject}.key", _key_pem(issued.key))
        cert_path = folder / f"{issued.subject}.pem"
        tmp = cert_path.with_name(cert_path.name + ".tmp")
        tmp.write_bytes(_pem(issued.cert))
        os.replace(tmp, cert_path)
        return cert_path

    def issue_citizen(self, real_name: str, address: str, key_type: str, days: int) -> tuple[Issued, bytes, str]:
        """A personal certificate (subject: the real name and the address; SAN: the address) and
        its PKCS#12 file, protected by a one-time password: (issued, p12 bytes, password). The
        private key exists only inside the PKCS#12: the city keeps no copy."""
        key = new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                             x509.NameAttribute(NameOID.COMMON_NAME, real_name),
                             x509.NameAttribute(NameOID.EMAIL_ADDRESS, address)])
        cert = self._leaf(subject, key, [address], [ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH], days)
        password = secrets.token_urlsafe(12)
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                      .kdf_rounds(100_000)
                      .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                      .hmac_hash(hashes.SHA256())
                      .build(password.encode()))
        p12 = pkcs12.serialize_key_and_certificates(real_name.encode("utf-8"), key, cert, [self.cert, self.root],
                                                    encryption)
        return Issued(cert, "citizen", address, address, key_type), p12, password

    # -- revocation --------------------------------------------------------------------------
    def crl(self, revoked: Iterable[tuple[str, dt.datetime, str | None]], now: dt.datetime | None = None) -> bytes:
        """The DER CRL of the issuing CA: (serial hex, revoked at, reason) of each revoked
        certificate; valid for CRL_HOURS."""
        now = now or _now()
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.cert.subject)
                   .last_update(now - dt.timedelta(minutes=5))
                   .next_update(now + dt.timedelta(hours=CRL_HOURS))
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False)
                   .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False))
        for serial, at, reason in revoked:
            entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                     .revocation_date(at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)))
            if reason and reason in REASONS and reason != "unspecified":
                entry = entry.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def chain_pem(self) -> bytes:
        """The issuing CA and the root: what a TLS server trusts client certificates up to."""
        return _pem(self.cert) + _pem(self.root)

    def root_pem(self) -> bytes:
        return _pem(self.root)


@dataclass(frozen=True)
class AgencySigner:
    """An agency's signing key and certificate, with the issuing CA to send along."""

    key: object
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, ca_dir: Path, agency_id: str) -> "AgencySigner | None":
        """None where the CA or the agency's certificate does not exist."""
        folder = ca_dir / AGENCIES
        try:
            key = serialization.load_pem_private_key((folder / f"{agency_id}.key").read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((folder / f"{agency_id}.pem").read_bytes())
            issuing = x509.load_pem_x509_certificate((ca_dir / ISSUING_CERT).read_bytes())
        except FileNotFoundError:
            return None
        return cls(key, cert, (issuing,))


def crl_url(config) -> str:
    if config.ca.crl_url:
        return config.ca.crl_url
    if config.http.base_url:
        return config.http.base_url.rstrip("/") + CRL_PATH
    scheme = "https" if config.http.tls else "http"
    return f"{scheme}://{config.http.listen or 'localhost'}{CRL_PATH}"

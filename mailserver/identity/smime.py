"""S/MIME signatures (RFC 8551 multipart/signed, detached CMS SignedData, RFC 5652): making one
for a whole message an agency submits (``sign_message``; the pipeline's notices take the fast
path in delivery/sign.py with ``sign_detached``), and checking one on mail a citizen sends:
which certificate signed exactly these bytes.

``cryptography`` makes such signatures (delivery/sign.py) but has no verifier: ``asn1crypto``
reads the SignedData, ``cryptography`` checks the digest and the signature. Whether the signer
is someone the city vouches for is not decided here: the caller looks the certificate up in the
city CA's register (``registry.ca.signer_of``), which knows what it issued and what it revoked.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from email.parser import BytesHeaderParser
from email import policy

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

#: the largest signature part read (a signature with a chain of a few certificates is ~4 KiB)
MAX_SIGNATURE_BYTES = 65536
_DIGESTS = {"sha256": (hashlib.sha256, hashes.SHA256), "sha384": (hashlib.sha384, hashes.SHA384),
            "sha512": (hashlib.sha512, hashes.SHA512)}
_PARSER = BytesHeaderParser(policy=policy.compat32)


#: the signature is over the canonical bytes as given (CRLF already): no re-encoding
SIGN_OPTIONS = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
SIGNATURE_PART = ('Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
                  'Content-Transfer-Encoding: base64\r\n'
                  'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n')
#: RFC 2045 6.8: at most 76 base64 characters per line
B64_LINE = 76


def sign_detached(key, cert: x509.Certificate, chain, content: bytes) -> bytes:
    """The DER SignedData of ``content`` (SHA-256), with the signer's certificate and ``chain``."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, SIGN_OPTIONS)


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite length)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


class TemplateSigner:
    """``sign_detached`` for many messages from one signer, about three times faster: the
    SignedData is made once by ``sign_detached`` (the oracle), and each message only puts its
    digest and the signing time into the signed attributes (fixed-size values in a fixed layout),
    signs them with the key and wraps the result in the template's unchanged pieces (RFC 5652:
    version, digest algorithm, certificates, signer id). The tests hold its output to the
    oracle's, field by field, and to openssl."""

    def __init__(self, key, cert: x509.Certificate, chain) -> None:
        self.key = key
        template = cms.ContentInfo.load(sign_detached(key, cert, chain, b""))
        signed = template["content"]
        signer = signed["signer_infos"][0]
        if signed["digest_algorithms"][0]["algorithm"].native != "sha256" or len(signed["signer_infos"]) != 1:
            raise ValueError("unexpected template")  # pragma: no cover (cryptography's layout)
        attrs = signer["signed_attrs"].dump()  # [0] IMPLICIT SET OF Attribute
        values = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
        digest = values["message_digest"].contents  # 32 bytes of the empty content's SHA-256
        stamp = values["signing_time"].chosen.contents  # "YYMMDDHHMMSSZ"
        self._digest_at = attrs.index(digest)
        self._time_at = attrs.index(stamp)
        if len(digest) != 32 or len(stamp) != 13:
            raise ValueError("unexpected template")  # pragma: no cover
        self._attrs = attrs
        self._signer_head = signer["version"].dump() + signer["sid"].dump() + signer["digest_algorithm"].dump()
        self._signature_algorithm = signer["signature_algorithm"].dump()
        self._signed_head = (signed["version"].dump() + signed["digest_algorithms"].dump()
                             + signed["encap_content_info"].dump() + signed["certificates"].dump())
        self._content_type = template["content_type"].dump()
        self._ec = isinstance(key, ec.EllipticCurvePrivateKey)
        self._second = -1
        self._utc = b""

    def _now(self) -> bytes:
        import time

        now = int(time.time())
        if now != self._second:
            self._second, self._utc = now, time.strftime("%y%m%d%H%M%SZ", time.gmtime(now)).encode("ascii")
        return self._utc

    def sign(self, content: bytes) -> bytes:
        attrs = bytearray(self._attrs)
        attrs[self._digest_at:self._digest_at + 32] = hashlib.sha256(content).digest()
        attrs[self._time_at:self._time_at + 13] = self._now()
        to_sign = b"\x31" + bytes(attrs[1:])  # RFC 5652 5.4: signed as a SET OF
        if self._ec:
            signature = self.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        signer_info = _der(0x30, self._signer_head + bytes(attrs) + self._signature_algorithm
                           + _der(0x04, signature))
        signed_data = _der(0x30, self._signed_head + _der(0x31, signer_info))
        return _der(0x30, self._content_type + _der(0xA0, signed_data))


def base64_lines(data: bytes) -> str:
    """Base64 in lines of B64_LINE characters, each ending in CRLF: what ``base64.encodebytes``
    gives with CRLF line ends, in one encoder call (encodebytes calls it once per 57-byte line)."""
    if not data:
        return ""
    encoded = binascii.b2a_base64(data, newline=False).decode("ascii")
    return "\r\n".join([encoded[i:i + B64_LINE] for i in range(0, len(encoded), B64_LINE)]) + "\r\n"


def signed_content_type(boundary: str) -> str:
    return (f'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
            f' micalg=sha-256; boundary="{boundary}"')


def multipart_signed(head: bytes, entity: bytes, boundary: str, signature_b64: str) -> bytes:
    """``head`` (outer header fields, each ending in CRLF, no Content-Type) over a multipart/signed
    of ``entity`` (a MIME entity, not ending in CRLF) and its signature (``base64_lines`` of the
    DER)."""
    return (head + signed_content_type(boundary).encode("ascii") + b"\r\n\r\n"
            + f"--{boundary}\r\n".encode("ascii") + entity
            + f"\r\n--{boundary}\r\n{SIGNATURE_PART}{signature_b64}--{boundary}--\r\n".encode("ascii"))


def is_signed_or_encrypted(raw: bytes) -> bool:
    head_end = raw.find(b"\r\n\r\n")
    ctype = _PARSER.parsebytes(raw[:head_end + 4] if head_end >= 0 else raw).get_content_type()
    return ctype in ("multipart/signed", "application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/encrypted")


def sign_message(key, cert: x509.Certificate, chain, raw: bytes) -> bytes:
    """A whole message (CRLF line ends) S/MIME-signed: its Content-* fields and body become the
    signed entity (text/plain where it had no Content-Type), the other fields stay outside, with
    MIME-Version. A message already signed or encrypted is returned as it is."""
    if is_signed_or_encrypted(raw):
        return raw
    head_end = raw.find(b"\r\n\r\n")
    header, body = (raw[:head_end + 2], raw[head_end + 4:]) if head_end >= 0 else (raw, b"")
    outer, inner = [], []
    for field in re.split(rb"\r\n(?![ \t])", header.rstrip(b"\r\n")):
        name = field.split(b":", 1)[0].strip().lower()
        if name.startswith(b"content-"):
            inner.append(field)
        elif name != b"mime-version":
            outer.append(field)
    if not any(f.lower().startswith(b"content-type:") for f in inner):
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii")
    body = body if body.endswith(b"\r\n") else body + b"\r\n"
    # the entity ends before the CRLF that belongs to the next delimiter (RFC 2046 5.1.1)
    entity = b"\r\n".join(inner) + b"\r\n\r\n" + body[:-2]
    boundary = "=_civicmail_s_" + hashlib.sha256(entity).hexdigest()[:24]
    head = b"\r\n".join(outer) + b"\r\nMIME-Version: 1.0\r\n"
    return multipart_signed(head, entity, boundary, base64_lines(sign_detached(key, cert, chain, entity)))


class BadSignature(ValueError):
    """Not a signature we can check, or one that does not hold."""


def split_signed(raw: bytes) -> tuple[bytes, bytes] | None:
    """(signed entity bytes, signature DER) of a ``multipart/signed`` message with an
    ``application/(x-)pkcs7-signature`` part; None if the message is not one. The entity is
    the first part exactly as carried (RFC 1847 2.1: the signature covers those octets)."""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    headers = _PARSER.parsebytes(raw[:head_end + 4])
    if headers.get_content_type() != "multipart/signed":
        return None
    if headers.get_param("protocol", "").lower() not in ("application/pkcs7-signature",
                                                          "application/x-pkcs7-signature"):
        return None
    boundary = headers.get_boundary()
    if not boundary:
        return None
    # Every delimiter line follows a CRLF, which belongs to the delimiter (RFC 2046 5.1.1); the
    # first may open the body, so the body is read with a CRLF in front.
    text = b"\r\n" + raw[head_end + 4:]
    marker = b"\r\n--" + boundary.encode("ascii", "replace")
    starts, at = [], text.find(marker)
    while at >= 0 and len(starts) < 3:
        starts.append(at)
        at = text.find(marker, at + len(marker))
    if len(starts) < 3:
        return None

    def part(i: int) -> bytes:
        line_end = text.find(b"\r\n", starts[i] + len(marker))
        return text[line_end + 2:starts[i + 1]]

    entity, signature_part = part(0), part(1)
    sig_end = signature_part.find(b"\r\n\r\n")
    if sig_end < 0:
        return None
    sig_headers = _PARSER.parsebytes(signature_part[:sig_end + 4])
    if sig_headers.get_content_type() not in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
        return None
    encoded = signature_part[sig_end + 4:]
    if len(encoded) > MAX_SIGNATURE_BYTES * 2:
        return None
    try:
        der = base64.b64decode(b"".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return entity, der


def _public_key_verify(cert: x509.Certificate, signature: bytes, data: bytes, hash_cls) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hash_cls())
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hash_cls()))
    else:
        raise BadSignature("unsupported key type")


def verify_detached(entity: bytes, signature_der: bytes) -> x509.Certificate:
    """The certificate whose key signed ``entity`` (RFC 5652 5.4: the messageDigest attribute
    equals the entity's digest, and the signature over the signed attributes holds); BadSignature
    otherwise. The certificate must be carried in the SignedData, as mail clients send it."""
    if len(signature_der) > MAX_SIGNATURE_BYTES:
        raise BadSignature("signature too large")
    try:
        info = cms.ContentInfo.load(signature_der)
        if info["content_type"].native != "signed_data":
            raise BadSignature("not SignedData")
        signed = info["content"]
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise BadSignature("expected one signer")
        signer = signers[0]
        digest_name = signer["digest_algorithm"]["algorithm"].native
        if digest_name not in _DIGESTS:
            raise BadSignature(f"digest {digest_name} not accepted")
        digest_fn, hash_cls = _DIGESTS[digest_name]
        sid = signer["sid"]
        certs = [c.chosen for c in signed["certificates"] or [] if c.name == "certificate"]
        cert_asn1 = None
        for c in certs:
            if sid.name == "issuer_and_serial_number":
                if c.issuer == sid.chosen["issuer"] and c.serial_number == sid.chosen["serial_number"].native:
                    cert_asn1 = c
            elif c.key_identifier == sid.chosen.native:
                cert_asn1 = c
        if cert_asn1 is None:
            raise BadSignature("the signer's certificate is not in the signature")
        attrs = signer["signed_attrs"]
        if not attrs:
            raise BadSignature("no signed attributes")
        message_digest = None
        for attr in attrs:
            if attr["type"].native == "message_digest":
                message_digest = attr["values"][0].native
        if message_digest is None or not hmac.compare_digest(message_digest, digest_fn(entity).digest()):
            raise BadSignature("the content does not match the signature")
        cert = x509.load_der_x509_certificate(cert_asn1.dump())
        # RFC 5652 5.4: the signature is over the DER of the attributes as a SET OF (tag 0x31)
        signed_bytes = b"\x31" + attrs.dump()[1:]
        _public_key_verify(cert, signer["signature"].native, signed_bytes, hash_cls)
        return cert
    except BadSignature:
        raise
    except (InvalidSignature, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadSignature(exc.__class__.__name__) from None

"""Stage `sign`: the server vouches for the agency a notice comes from, and the agency signs it.

A notice delivered to a local mailbox never crossed the network, so there is nothing for DKIM
to protect (DKIM signs what leaves the city: the SMTP part). The server states what it knows in an
``Authentication-Results`` header (RFC 8601): the notice came from the named agency through the
pipeline. Where the city CA has given the agency a certificate (``civicmail ca issue agency``),
the notice is also S/MIME signed with it (RFC 8551 3.5.3: ``multipart/signed``, a detached
SHA-256 signature with the issuing CA's certificate included), so the citizen's mail client shows
a verified signer once the city root is trusted; a phishing copy cannot carry that signature.
"""
from __future__ import annotations

from dataclasses import dataclass

from mailserver.identity.smime import TemplateSigner, base64_lines, multipart_signed, signed_content_type

from .structure import ComposedNotice


def authentication_results(hostname: str, agency_id: str, sender: str) -> bytes:
    return (f"Authentication-Results: {hostname}; auth=pass smtp.auth={agency_id}"
            f" header.from={sender} (notice from the city's delivery pipeline)\r\n").encode("ascii")


def sign(raw_without_trace: bytes, header: bytes) -> bytes:
    """Prepend the server's header (it is the first thing a reader's client trusts)."""
    return header + raw_without_trace


def signed_boundary(inner: str) -> str:
    """The multipart/signed boundary, from the inner one (``compose.boundary``): "=_" never occurs
    in base64, and the inner boundary is not a prefix of it nor it of the inner one."""
    return inner.replace("=_civicmail_", "=_civicmail_s_", 1)


@dataclass(frozen=True)
class SignedNotice:
    """A composed notice wrapped in multipart/signed, and what its structure needs."""

    raw: bytes
    header_size: int
    content_type: str
    boundary: str
    #: the signature part's base64 as carried, ending in CRLF
    signature_b64: str


class SmimeSigner:
    """Signs with one agency's key and certificate (``identity.ca.AgencySigner``)."""

    def __init__(self, key, cert, chain) -> None:
        self.template = TemplateSigner(key, cert, tuple(chain))

    def sign_notice(self, notice: ComposedNotice) -> SignedNotice:
        """The notice's header (its Content-Type replaced) over a multipart/signed of the
        notice's own multipart/alternative entity and the signature (RFC 8551 3.5.3)."""
        raw = notice.raw
        inner_start = notice.header_size - len(notice.content_type) - 4  # the Content-Type field, CRLF CRLF
        # The CRLF before the next delimiter belongs to the delimiter (RFC 2046 5.1.1): the
        # signed entity ends at the inner closing delimiter's "--".
        entity = raw[inner_start:-2]
        outer = signed_boundary(notice.boundary)
        signature_b64 = base64_lines(self.template.sign(entity))
        content_type = signed_content_type(outer)
        signed = multipart_signed(raw[:inner_start], entity, outer, signature_b64)
        return SignedNotice(signed, inner_start + len(content_type) + 4, content_type, outer, signature_b64)


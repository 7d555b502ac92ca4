"""Stage `sign`: the server vouches for the agency a notice comes from.

A notice delivered to a local mailbox never crossed the network, so there is nothing for DKIM
to protect (DKIM signs what leaves the city: the SMTP part). The server states what it knows in an
``Authentication-Results`` header (RFC 8601): the notice came from the named agency through the
pipeline. S/MIME signing with the agency's own certificate is a later issue (the city CA).
"""
from __future__ import annotations


def authentication_results(hostname: str, agency_id: str, sender: str) -> bytes:
    return (f"Authentication-Results: {hostname}; auth=pass smtp.auth={agency_id}"
            f" header.from={sender} (notice from the city's delivery pipeline)\r\n").encode("ascii")


def sign(raw_without_trace: bytes, header: bytes) -> bytes:
    """Prepend the server's header (it is the first thing a reader's client trusts)."""
    return header + raw_without_trace

"""Who may do what: pure decisions, no I/O, so each rule is tested on its own.

Each check returns None (allowed) or the reply that refuses (a constant from replies.py).
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from ..identity.addresses import normalise_domain
from ..registry.auth import Principal
from . import headers, replies


def _address(ip: str | None):
    """The client's address (an IPv6 zone dropped), or None when it is not one."""
    try:
        return ipaddress.ip_address((ip or "").split("%")[0])
    except ValueError:
        return None


def is_loopback(ip: str | None) -> bool:
    address = _address(ip)
    return address is not None and address.is_loopback


def auth_requires_tls(*, implicit_tls: bool, development: bool, client_ip: str | None) -> bool:
    """Must this connection start TLS before AUTH? Always, except on an implicit-TLS port (it
    is encrypted already) and, in development mode only, on a loopback address."""
    if implicit_tls:
        return False
    return not (development and is_loopback(client_ip))


def domain_of(address: str) -> str:
    """The domain of an address in its one comparable form (``normalise_domain``): what is
    compared with the local domains must not differ by case, a trailing dot or IDNA."""
    return normalise_domain(address.rpartition("@")[2])


def check_envelope_sender(principal: Principal, sender: str) -> str | None:
    if not sender:
        return replies.SENDER_EMPTY
    if principal.may_send_from(sender):
        return None
    return replies.SENDER_NOT_AGENCY if principal.is_agency else replies.SENDER_NOT_YOURS


def in_networks(ip: str | None, networks) -> bool:
    address = _address(ip)
    if address is None:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def check_inbound_sender(addresses: list[str], local_domains, reply: str) -> str | None:
    """Unauthenticated mail (the inbound port) naming one of the city's own domains as its
    sender is a forgery: citizens and agencies send through authenticated submission."""
    if any(domain_of(a) in local_domains for a in addresses if a):
        return reply
    return None


def check_remote_recipient(principal: Principal | None) -> str | None:
    """A recipient outside the city's domains: only an authenticated citizen may send there."""
    if principal is None:
        return replies.RELAY_REFUSED
    if principal.is_agency:
        return replies.AGENCY_REMOTE_REFUSED
    return None


def check_from_header(principal: Principal, from_addresses: list[str]) -> str | None:
    """The From: header must name exactly the sender's own address (an agency: one of its)."""
    refused = replies.FROM_NOT_AGENCY if principal.is_agency else replies.FROM_NOT_YOURS
    if not from_addresses or any(not principal.may_send_from(a) for a in from_addresses):
        return refused
    return None


def check_notice_types(principal: Principal, notice_types: list[str]) -> str | None:
    if not principal.is_agency and notice_types:
        return replies.NOTICE_TYPE_NOT_GRANTED  # citizens send no notices
    if any(t.strip().lower() not in principal.grants for t in notice_types):
        return replies.NOTICE_TYPE_NOT_GRANTED
    return None


def settable_fields(principal: Principal | None) -> frozenset[bytes]:
    """The internal X-Civicmail-* fields a sender may write (every other is removed on entry):
    an agency its notice type and answer status (its notice types were checked against its
    grants); citizens and the internet none."""
    return headers.AGENCY_FIELDS if principal is not None and principal.is_agency else frozenset()


def trusted_value(principal: Principal) -> str:
    """The value of X-Civicmail-Authenticated for an accepted submission."""
    return f"agency={principal.agency_id}" if principal.is_agency else f"citizen={principal.address}"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per key: ``per_minute`` events, refilled continuously. In memory, one
    process (like the login throttle)."""

    MAX_KEYS = 100_000

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.capacity = float(max(per_minute, 1))
        self.rate = self.capacity / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]

"""What an operator must fix: the checks of ``civicmail check``, for a terminal and for monitoring.

Each finding is one line, ``OK|WARN|FAIL  what  (how to fix)``; the exit status is the worst of
them as Nagios-style plugins report it: 0 all OK, 1 a warning, 2 a failure. A check that cannot
run at all (an error inside it) is a failure naming it, never a traceback: monitoring must get a
line and a status whatever happens.

The checks read; they change nothing and fetch nothing but the city's own DNS records from the
configured (or the system's) resolver (and, in external mode, the LMTP server's greeting). No answer from it is "cannot verify", a warning: an
offline or firewalled host is not a broken mail server.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Callable

from .config import Config

OK, WARN, FAIL = "OK", "WARN", "FAIL"
EXIT_STATUS = {OK: 0, WARN: 1, FAIL: 2}
#: paths named when the data directory has loose permissions, at most
SHOWN_PATHS = 3


@dataclass(frozen=True)
class Finding:
    status: str
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.what}" + (f"  ({self.fix})" if self.fix else "")


def exit_status(findings: list[Finding]) -> int:
    return max((EXIT_STATUS[f.status] for f in findings), default=0)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- files -----------------------------------------------------------------------------------

def permissions(config: Config) -> list[Finding]:
    from . import datadir

    if not config.data_dir.is_dir():
        return [Finding(FAIL, f"permissions: the data directory {config.data_dir} does not exist",
                        "`civicmail init` it, or restore a backup into it")]
    loose = datadir.too_open(config)
    if not loose:
        return [Finding(OK, f"permissions: {config.data_dir} closed to others")]
    shown = ", ".join(f"{p} {m:04o}" for p, m in loose[:SHOWN_PATHS]) + (" ..." if len(loose) > SHOWN_PATHS else "")
    return [Finding(FAIL, f"permissions: {len(loose)} path(s) in {config.data_dir} open to others or group-writable: "
                          f"{shown}", f"chmod -R g-w,o-rwx {config.data_dir}, or `civicmail init` resets every mode")]


def id_keys(config: Config) -> list[Finding]:
    from .errors import ConfigError
    from .identity.keys import IdKeyring

    folder = config.data_path(config.keys.dir)
    try:
        ring = IdKeyring.load(folder)
    except ConfigError as exc:
        return [Finding(FAIL, f"ID-number keys: {exc}", "restore keys/ from the key backup (`backup --keys-to`)")]
    return [Finding(OK, f"ID-number keys: {folder} readable, {len(ring.enc_keys)} encryption version(s)")]


def oidc_keys(config: Config) -> list[Finding]:
    """The identity provider's signing key: without it no citizen signs in to the portal or
    webmail, and no relying party gets an ID token."""
    from .errors import ConfigError
    from .identity.oidckeys import SigningKeys

    folder = config.data_path(config.keys.dir)
    try:
        ring = SigningKeys.load(folder)
    except ConfigError as exc:
        return [Finding(FAIL, f"sign-in key: {exc}",
                        "restore it from the key backup (`backup --keys-to`); only if there is none, "
                        "`civicmail db upgrade` makes a new one and every ID token signed before stops verifying")]
    return [Finding(OK, f"sign-in key: OpenID Connect key {ring.current.kid} readable")]


def tls_certificate(config: Config, now: dt.datetime | None = None) -> list[Finding]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = now or _utcnow()
    cert_path, key_path = config.data_path(config.tls.cert), config.data_path(config.tls.key)
    renew = f"install a renewed certificate at {cert_path} (tls.cert) and its key (tls.key), then restart serve"
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except (OSError, ValueError) as exc:
        return [Finding(FAIL, f"TLS certificate {cert_path} unreadable ({exc.__class__.__name__})", renew)]
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return [Finding(FAIL, f"TLS key {key_path} unreadable ({exc.__class__.__name__})", renew)]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != cert.public_key().public_bytes(serialization.Encoding.DER, spki)):
        return [Finding(FAIL, f"TLS key {key_path} is not the key of the certificate {cert_path}", renew)]
    until, since = cert.not_valid_after_utc, cert.not_valid_before_utc
    days = (until - now).total_seconds() / 86400
    what = f"TLS certificate {cert_path}"
    if until <= now:
        return [Finding(FAIL, f"{what} expired {until:%Y-%m-%d %H:%M} UTC: clients refuse to connect", renew)]
    if since > now:
        return [Finding(FAIL, f"{what} not valid before {since:%Y-%m-%d %H:%M} UTC", "check the clock and the certificate")]
    findings = []
    if days < config.check.cert_warn_days:
        findings.append(Finding(WARN, f"{what} expires {until:%Y-%m-%d} ({days:.0f} days)", renew))
    else:
        findings.append(Finding(OK, f"{what} valid until {until:%Y-%m-%d} ({days:.0f} days)"))
    if not config.server.development and cert.issuer == cert.subject:
        findings.append(Finding(WARN, f"{what} is self-signed: mail clients warn or refuse",
                                "install a certificate from a CA (e.g. Let's Encrypt) for " + config.server.hostname))
    return findings


def city_ca(config: Config, now: dt.datetime | None = None) -> list[Finding]:
    """The city CA's root and issuing certificates and the agencies' signing certificates: a
    warning within check.cert_warn_days of the end of one, a failure past it. The CRL is signed
    on request by the issuing CA (a day at a time): it lasts as long as the issuing CA, so that
    one's line names it. Nothing where no city CA was made (`ca init`)."""
    from cryptography import x509

    from .identity.ca import AGENCIES, ISSUING_CERT, ROOT_CERT, CityCA

    now = now or _utcnow()
    ca_dir = config.data_path(config.ca.dir)
    if not CityCA.exists(ca_dir):
        return []
    renew_ca = "renew the city CA before then (a new issuing CA under the root; clients keep trusting the root)"
    items = [("city CA root", ca_dir / ROOT_CERT, "every certificate of the city stops verifying", renew_ca),
             ("city CA issuing certificate", ca_dir / ISSUING_CERT,
              "the certificates it issued and its CRL stop verifying", renew_ca)]
    items += [(f"agency {path.stem} signing certificate", path, "its notices go out unsigned",
               f"`civicmail ca issue agency {path.stem}`") for path in sorted((ca_dir / AGENCIES).glob("*.pem"))]
    findings, fine = [], []
    for what, path, then, fix in items:
        try:
            until = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        except (OSError, ValueError) as exc:
            findings.append(Finding(FAIL, f"{what} {path} unreadable ({exc.__class__.__name__})", fix))
            continue
        days = (until - now).total_seconds() / 86400
        if until <= now:
            findings.append(Finding(FAIL, f"{what} expired {until:%Y-%m-%d %H:%M} UTC: {then}", fix))
        elif days < config.check.cert_warn_days:
            findings.append(Finding(WARN, f"{what} expires {until:%Y-%m-%d} ({days:.0f} days): {then}", fix))
        else:
            fine.append(until)
    if fine:
        findings.append(Finding(OK, f"city CA: {len(fine)} certificate(s) (root, issuing, agencies') valid for "
                                    f"{config.check.cert_warn_days} days or more, the first to end on "
                                    f"{min(fine):%Y-%m-%d}"))
    return findings


def _dkim_public(config: Config) -> tuple[str | None, Finding]:
    """The DKIM key's DNS record value, and the finding on the key file itself."""
    from .identity.certs import dkim_dns_record

    path = config.data_path(config.dkim.key)
    try:
        record = dkim_dns_record(path)
    except (OSError, ValueError, TypeError) as exc:
        return None, Finding(FAIL, f"DKIM key {path} unreadable ({exc.__class__.__name__}): mail to other domains "
                                   "cannot be signed", "`civicmail init` makes one; then publish its DNS record")
    return record, Finding(OK, f"DKIM key {path} readable (selector {config.dkim.selector})")


# -- DNS -------------------------------------------------------------------------------------

class CannotVerify(Exception):
    """The resolver gave no answer (offline, firewalled, timed out)."""


def _resolver(config: Config):
    import dns.nameserver
    import dns.resolver

    from .config import nameserver_address

    try:
        resolver = dns.resolver.Resolver(configure=not config.check.nameservers)
    except dns.resolver.NoResolverConfiguration:
        raise CannotVerify("no resolver configured (/etc/resolv.conf)") from None
    if config.check.nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*nameserver_address(n)) for n in config.check.nameservers]
    resolver.lifetime = resolver.timeout = config.check.dns_timeout
    resolver.use_edns(0, 0, 1232)  # a 2048-bit DKIM key's TXT answer nears 512 bytes (DNS flag day 2020 size)
    return resolver


def _lookup(resolver, name: str, rdtype: str) -> list:
    """The records of ``name``; [] for a name or a type that does not exist (an answer)."""
    import dns.exception
    import dns.resolver

    try:
        return list(resolver.resolve(name, rdtype, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout, OSError) as exc:
        raise CannotVerify(f"{exc.__class__.__name__} asking for {name} {rdtype}") from None


def _txt(record) -> str:
    return b"".join(record.strings).decode("utf-8", "replace")


def _dkim_key_of(record: str) -> str:
    tags = dict(part.strip().split("=", 1) for part in record.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


def dns_records(config: Config, dkim_record: str | None) -> list[Finding]:
    """MX, SPF and the DKIM key, as published; one warning in all if the resolver does not answer."""
    domain, host = config.city.domain, config.server.hostname.rstrip(".").lower()
    selector = f"{config.dkim.selector}._domainkey.{domain}"
    try:
        resolver = _resolver(config)
        mx = sorted((r.preference, r.exchange.to_text().rstrip(".").lower()) for r in _lookup(resolver, domain, "MX"))
        spf = [t for t in map(_txt, _lookup(resolver, domain, "TXT")) if t.lower().startswith("v=spf1")]
        dkim = [t for t in map(_txt, _lookup(resolver, selector, "TXT")) if "p=" in t]
    except CannotVerify as exc:
        return [Finding(WARN, f"DNS: cannot verify the MX, SPF and DKIM records of {domain} ({exc})",
                        "check them from a host whose resolver answers, or set check.nameservers")]
    out = []
    if not mx:
        out.append(Finding(WARN, f"DNS: no MX record for {domain}: senders fall back to its address record",
                           f"publish {domain}. MX 10 {host}."))
    elif host not in [name for _, name in mx]:
        out.append(Finding(WARN, f"DNS: MX of {domain} is {', '.join(n for _, n in mx)}, not {host}",
                           "fine if that host relays to this one; else publish MX 10 " + host))
    else:
        out.append(Finding(OK, f"DNS: MX of {domain} points to {host}"))
    if not spf:
        out.append(Finding(WARN, f"DNS: no SPF record for {domain}: receivers may treat the city's mail as spam",
                           f'publish {domain}. TXT "v=spf1 mx -all"'))
    elif len(spf) > 1:
        out.append(Finding(FAIL, f"DNS: {len(spf)} SPF records for {domain}: receivers treat that as an error "
                                 "(RFC 7208 4.5)", "merge them into one TXT record"))
    else:
        out.append(Finding(OK, f"DNS: SPF of {domain}: {spf[0]}"))
    publish = f'publish {selector}. TXT "{dkim_record}"' if dkim_record else "fix the DKIM key first"
    if not dkim:
        out.append(Finding(WARN, f"DNS: no DKIM key published at {selector}: signed mail cannot be verified", publish))
    elif dkim_record is None:
        out.append(Finding(WARN, f"DNS: a DKIM key is published at {selector}, but the key file is unreadable",
                           publish))
    elif _dkim_key_of(dkim_record) not in map(_dkim_key_of, dkim):
        out.append(Finding(FAIL, f"DNS: the DKIM key published at {selector} is not dkim.key's: every message "
                                 "signed for other domains fails DKIM", publish))
    else:
        out.append(Finding(OK, f"DNS: DKIM key at {selector} matches dkim.key"))
    return out


def dkim_and_dns(config: Config) -> list[Finding]:
    record, finding = _dkim_public(config)
    return [finding] + dns_records(config, record)


# -- the file system ---------------------------------------------------------------------------

def disk_space(config: Config) -> list[Finding]:
    st = os.statvfs(config.data_dir)
    free = 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 0.0
    what = f"disk: {free:.1f}% free ({st.f_bavail * st.f_frsize / 2**30:.1f} GiB) where {config.data_dir} is"
    fix = "free space or grow the file system: SQLite stops writing when the disk is full, and SMTP answers 451"
    if free < config.check.disk_fail_percent:
        return [Finding(FAIL, what, fix)]
    if free < config.check.disk_warn_percent:
        return [Finding(WARN, what, fix)]
    return [Finding(OK, what)]


# -- the store -------------------------------------------------------------------------------

def store_checks(config: Config, now: dt.datetime | None = None) -> list[Finding]:
    from .datadir import sqlite_path
    from .store import migrate, open_store
    from .store.outage import describe, is_outage

    database = sqlite_path(config)
    if database is not None and not database.is_file():  # SQLite would make an empty one: a check writes nothing
        return [Finding(FAIL, f"database: {database} does not exist",
                        "`civicmail init`, or `civicmail restore` a backup")]
    store = open_store(config)
    try:
        try:
            pending = migrate.pending_revisions(store)
        except Exception as exc:
            if not is_outage(exc):
                raise
            return [Finding(FAIL, f"database: unavailable ({describe(exc)})", "is the database server running?")]
        if pending is None:
            return [Finding(FAIL, f"database: at revision {migrate.current_revision(store)}, unknown to this civicmail "
                                  f"(newest {migrate.head_revision()})", "install the civicmail that migrated it")]
        if pending:
            return [Finding(FAIL, f"database: {len(pending)} migration(s) pending (at "
                                  f"{migrate.current_revision(store) or 'empty'}, newest {migrate.head_revision()})",
                            "stop serve, run `civicmail db upgrade`, start serve")]
        return [Finding(OK, f"database: schema at the newest revision {migrate.head_revision()}"),
                outbound_queue(config, store, now or _utcnow()), blob_store(store)] + behind_pooler(store)
    finally:
        store.dispose()


def external_store(config: Config) -> list[Finding]:
    """store.mode = "external": the LMTP server answers its greeting and LHLO (then QUIT: nothing
    is sent). Nothing to check in local mode."""
    if not config.external_store:
        return []
    from .store.external import connect_and_greet

    try:
        greeting = connect_and_greet(config.lmtp, config.server.hostname)
    except Exception as exc:  # refused, timed out, TLS, a non-250 LHLO: each is "cannot deliver"
        return [Finding(FAIL, f"external mail store: LMTP {config.lmtp.target} does not answer "
                              f"({exc.__class__.__name__})",
                        "start it, or fix lmtp.target: notices and mail for mailboxes cannot be delivered")]
    return [Finding(OK, f"external mail store: LMTP {config.lmtp.target} answers ({greeting[:60]})")]


def behind_pooler(store) -> list[Finding]:
    """With ``store.listen_url`` (store.url is a transaction-mode pooler): the server timeouts a
    direct connection sets itself must come from the pooler's connect_query (a WARN if they are
    off), and the direct LISTEN connection must open (a FAIL: nodes would hear of other nodes'
    mail only at the 30 s poll)."""
    if not store.listen_url:
        return []
    from sqlalchemy import text

    from .store.outage import describe

    with store.reader() as s:
        off = [name for name in ("statement_timeout", "idle_in_transaction_session_timeout")
               if s.execute(text(f"SHOW {name}")).scalar() == "0"]
    found = [Finding(WARN, f"database: through the pooler, {' and '.join(off)} off",
                     "set them in PgBouncer's connect_query (docs/scale.md, PgBouncer)")] if off else [
        Finding(OK, "database: through the pooler, statement and idle-transaction timeouts set")]
    try:
        with store.listen_connection() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to connect is the finding
        return found + [Finding(FAIL, f"database: store.listen_url does not connect ({describe(exc)})",
                                "store.listen_url must name the database directly, not the pooler")]
    return found + [Finding(OK, "database: the LISTEN connection (store.listen_url) opens")]


def blob_store(store) -> Finding:
    """Where message bodies go (``[blobs]``), whether it answers, and how many bodies are still
    in the database."""
    from .store.bodies import bodies_in_database
    from .store.outage import describe

    left = bodies_in_database(store)
    if store.blobs is None:
        return Finding(OK, f"message bodies: in the database (blobs.backend = \"database\", the default on "
                           f"PostgreSQL), {left} stored")
    where = store.blobs.describe()
    try:
        store.blobs.ping()
    except Exception as exc:
        return Finding(FAIL, f"message bodies: the blob store, {where}, does not answer ({describe(exc)})",
                       "check [blobs] (bucket, endpoint, credentials) and that the store is up")
    if left:
        return Finding(WARN, f"message bodies: {store.blobs.backend} blob store, {where}; {left} bodies still in the "
                             "database", "`civicmail blobs migrate` (or let serve move them: blobs.migrate_batch)")
    return Finding(OK, f"message bodies: {store.blobs.backend} blob store, {where}")


def outbound_queue(config: Config, store, now: dt.datetime) -> Finding:
    from sqlalchemy import func, select

    from .outbound.queue import age_seconds
    from .store.models import OutboundMessage

    waiting = OutboundMessage.state.in_(("queued", "sending"))
    with store.reader() as s:
        count, oldest = s.execute(select(func.count(OutboundMessage.id), func.min(OutboundMessage.created_at))
                                  .where(waiting)).one()
        error = s.scalar(select(OutboundMessage.last_error).where(waiting, OutboundMessage.last_error.is_not(None))
                         .order_by(OutboundMessage.created_at).limit(1))
    if not count:
        return Finding(OK, "outbound queue: empty")
    age = age_seconds(oldest, now) / 60
    what = f"outbound queue: {count} waiting, the oldest for {_minutes(age)}"
    if not config.outbound.relay:
        fix = "no relay is configured: set outbound.relay"
    else:
        fix = f"`civicmail queue list`; last error: {(error or 'none')[:120]}"
    if age >= config.check.queue_fail_minutes:
        return Finding(FAIL, what, fix)
    if age >= config.check.queue_warn_minutes:
        return Finding(WARN, what, fix)
    return Finding(OK, what)


def _minutes(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes < 48 * 60 else f"{minutes / 1440:.1f} days"


#: every check, in the order printed: (name, check)
CHECKS: tuple[tuple[str, Callable[[Config], list[Finding]]], ...] = (
    ("permissions", permissions), ("ID-number keys", id_keys), ("sign-in key", oidc_keys),
    ("TLS certificate", tls_certificate),
    ("city CA", city_ca), ("DKIM and DNS", dkim_and_dns), ("disk space", disk_space), ("database", store_checks),
    ("external mail store", external_store),
)


def run(config: Config) -> list[Finding]:
    """Every check's findings; a check that raised is one failure naming it."""
    findings: list[Finding] = []
    for name, check in CHECKS:
        try:
            findings += check(config)
        except Exception as exc:  # monitoring gets a line and a status whatever happens
            findings.append(Finding(FAIL, f"{name}: the check itself failed ({exc.__class__.__name__})",
                                    "run `civicmail check` by hand; report it if it persists"))
    return findings

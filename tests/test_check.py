"""`civicmail check` (issue 16, item 11) through the real CLI on a data directory: a fresh one is OK
but for DNS, which it cannot verify; then each thing an operator must fix is broken in turn and
named on its own line, with the exit status monitoring reads (0 OK, 1 a warning, 2 a failure).

DNS answers come from a small server on 127.0.0.1 (check.nameservers): no test asks any other."""
from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading

import dns.message
import dns.rdatatype
import dns.rcode
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from mailserver.config import REPO_ROOT
from mailserver.datadir import secure
from mailserver.identity.certs import dkim_dns_record, make_dkim_key
from mailserver.store import migrate, open_store
from mailserver.store.models import OutboundMessage
from tests.serverkit import prepared_city

DOMAIN, HOST = "hz.example.cn", "mail.hz.example.cn"


class FakeDNS(threading.Thread):
    """Answers A/MX/TXT questions from ``records`` ((name, type) -> rdata texts) over UDP."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        super().__init__(daemon=True)
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.stopped = threading.Event()

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.sock.getsockname()[1]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name, rdtype = question.name.to_text().rstrip(".").lower(), dns.rdatatype.to_text(question.rdtype)
            if not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif self.records.get((name, rdtype)):
                response.answer.append(dns.rrset.from_text(question.name, 300, "IN", rdtype, *self.records[name, rdtype]))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sock.close()


def txt(value: str) -> str:
    """A TXT rdata of several strings, as a long DKIM record is published (255 bytes each at most)."""
    return " ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))


def published(config, dkim_record: str | None = None) -> dict[tuple[str, str], list[str]]:
    """The records `civicmail init` tells the operator to publish."""
    dkim_record = dkim_record or dkim_dns_record(config.data_path(config.dkim.key))
    return {(DOMAIN, "MX"): [f"10 {HOST}."], (DOMAIN, "TXT"): ['"v=spf1 mx -all"', '"google-site-verification=x"'],
            (f"civic1._domainkey.{DOMAIN}", "TXT"): [txt(dkim_record)]}


@pytest.fixture
def data(tmp_path):
    config, _ = prepared_city(tmp_path / "data", (), lambda reg: None)
    return config


@pytest.fixture
def dns_server():
    servers: list[FakeDNS] = []

    def start(records) -> FakeDNS:
        server = FakeDNS(records)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def check(config, nameserver: str, *overrides: str) -> tuple[int, dict[str, list[str]]]:
    """Exit status, and the lines by their first word (OK, WARN, FAIL)."""
    sets = [f'check.nameservers=["{nameserver}"]', "check.dns_timeout=1", *overrides]
    proc = subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(config.source),
                           *[a for s in sets for a in ("--set", s)], "check"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stderr == "" and "Traceback" not in proc.stdout, proc.stderr
    lines: dict[str, list[str]] = {"OK": [], "WARN": [], "FAIL": []}
    for line in proc.stdout.splitlines():
        status, rest = line.split(None, 1)
        lines[status].append(rest)
    return proc.returncode, lines


def silent_port() -> str:
    """A UDP port on loopback where nothing answers (a resolver that is down)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def write_certificate(config, days_left: float) -> None:
    """Replace the TLS certificate with one for the same key that expires in ``days_left`` days."""
    key = serialization.load_pem_private_key(config.data_path(config.tls.key).read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=90))
            .not_valid_after(now + dt.timedelta(days=days_left)).sign(key, hashes.SHA256()))
    config.data_path(config.tls.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def queue_message(config, age: dt.timedelta) -> None:
    store = open_store(config)
    try:
        with store.session() as s:
            s.add(OutboundMessage(sender="li.qiang@hz.example.cn", recipients="x@elsewhere.example",
                                  raw=b"Subject: x\r\n\r\nx\r\n",
                                  created_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - age))
    finally:
        store.dispose()


def test_a_fresh_data_directory_is_ok_but_for_dns_it_cannot_verify(data):
    status, lines = check(data, silent_port())
    assert status == 1, lines
    assert not lines["FAIL"] and len(lines["WARN"]) == 1 and "DNS: cannot verify" in lines["WARN"][0], lines
    assert len(lines["OK"]) == 9, lines["OK"]  # permissions, keys, sign-in key, TLS, DKIM key, disk, schema, queue,
    # bodies
    assert any(line.startswith("message bodies: local blob store, local directory ") for line in lines["OK"])
    assert any(line.startswith("outbound queue: empty") for line in lines["OK"])


def test_everything_published_and_in_order_exits_0(data, dns_server):
    status, lines = check(data, dns_server(published(data)).address)
    assert status == 0 and not lines["WARN"] and not lines["FAIL"], lines
    assert f"DNS: MX of {DOMAIN} points to {HOST}" in lines["OK"]
    assert f"DNS: DKIM key at civic1._domainkey.{DOMAIN} matches dkim.key" in lines["OK"]


def test_what_needs_attention_soon_is_a_warning(data, dns_server):
    write_certificate(data, days_left=10)
    queue_message(data, dt.timedelta(hours=2))
    records = published(data)
    del records[DOMAIN, "TXT"]  # no SPF
    status, lines = check(data, dns_server(records).address, "check.disk_warn_percent=100")
    assert status == 1 and not lines["FAIL"], lines
    warned = "\n".join(lines["WARN"])
    assert "TLS certificate" in warned and "expires" in warned and "(10 days)" in warned
    assert "outbound queue: 1 waiting, the oldest for 2.0 h" in warned and "set outbound.relay" in warned
    assert "disk: " in warned and f"DNS: no SPF record for {DOMAIN}" in warned
    assert len(lines["WARN"]) == 4, lines["WARN"]


def test_each_broken_thing_is_a_failure_on_its_own_line(data, dns_server, tmp_path):
    write_certificate(data, days_left=-1)
    queue_message(data, dt.timedelta(days=2))
    os.chmod(data.data_path("civicmail.sqlite3"), 0o644)
    other_key = dkim_dns_record_of_new_key(tmp_path)
    status, lines = check(data, dns_server(published(data, other_key)).address,
                          "check.disk_warn_percent=100", "check.disk_fail_percent=100")
    assert status == 2, lines
    failed = {line.split(" ", 1)[0].rstrip(":") for line in lines["FAIL"]}
    assert failed == {"permissions", "TLS", "DNS", "disk", "outbound"}, lines["FAIL"]
    text = "\n".join(lines["FAIL"])
    assert "civicmail.sqlite3 0644" in text and "expired" in text and "is not dkim.key's" in text
    assert "the oldest for 2.0 days" in text

    store = open_store(data)
    try:
        migrate.downgrade(store, "0005")
        behind = len(migrate.pending_revisions(store))  # every migration after 0005
    finally:
        store.dispose()
    os.chmod(data.data_path("civicmail.sqlite3"), 0o600)
    write_certificate(data, days_left=365)
    status, lines = check(data, dns_server(published(data)).address)
    assert status == 2 and len(lines["FAIL"]) == 1, lines
    assert lines["FAIL"][0].startswith(f"database: {behind} migration(s) pending (at 0005, newest")
    assert "civicmail db upgrade" in lines["FAIL"][0]


def test_a_missing_sign_in_key_is_a_failure(data, dns_server):
    from mailserver.identity.oidckeys import KEYFILE

    key = data.data_path("keys") / KEYFILE
    key.rename(key.with_name("moved.json"))
    status, lines = check(data, dns_server(published(data)).address)
    assert status == 2 and len(lines["FAIL"]) == 1, lines
    assert lines["FAIL"][0].startswith(f"sign-in key: {key}: OpenID Connect signing key missing")
    assert "`backup --keys-to`" in lines["FAIL"][0]
    assert not key.exists()  # the check makes none


def dkim_dns_record_of_new_key(tmp_path) -> str:
    return make_dkim_key(tmp_path / "another-dkim.key")


def test_a_missing_database_is_a_failure_and_the_check_makes_none(data):
    database = data.data_path("civicmail.sqlite3")
    database.rename(database.with_name("moved.sqlite3"))
    status, lines = check(data, silent_port())
    assert status == 2 and lines["FAIL"] == [f"database: {database} does not exist  (`civicmail init`, or "
                                             "`civicmail restore` a backup)"], lines
    assert not database.exists()


def renew_issuing(config, days: int) -> None:
    """The city CA's issuing certificate made again by its root, valid for ``days`` more."""
    from mailserver.identity.ca import ISSUING_CERT, ROOT_KEY

    path = config.data_path(config.ca.dir) / ISSUING_CERT
    old = x509.load_pem_x509_certificate(path.read_bytes())
    root_key = serialization.load_pem_private_key((config.data_path(config.ca.root_dir) / ROOT_KEY).read_bytes(),
                                                  password=None)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
               .public_key(old.public_key()).serial_number(old.serial_number)
               .not_valid_before(old.not_valid_before_utc)
               .not_valid_after(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days, hours=1)))
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    path.write_bytes(builder.sign(root_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def test_city_ca_certificates_near_their_end_are_warnings(data, dns_server):
    from tests.cahelpers import make_ca

    ca = make_ca(data)
    ca.install_agency(ca.issue_agency("traffic-police", "市公安局交通警察支队", [f"jiaojing@{DOMAIN}"], "ec-p256", 10))
    secure(data)  # made here, not under the CLI's umask: the modes `civicmail init` gives
    nameserver = dns_server(published(data)).address
    status, lines = check(data, nameserver)
    assert status == 1 and not lines["FAIL"], lines
    assert len(lines["WARN"]) == 1, lines["WARN"]
    assert lines["WARN"][0].startswith("agency traffic-police signing certificate expires ")
    assert "(10 days): its notices go out unsigned" in lines["WARN"][0]
    assert "`civicmail ca issue agency traffic-police`" in lines["WARN"][0]
    assert any(x.startswith("city CA: 2 certificate(s) ") for x in lines["OK"]), lines["OK"]
    renew_issuing(data, 20)  # the issuing CA, which also signs the CRL
    status, lines = check(data, nameserver)
    warned = "\n".join(lines["WARN"])
    assert status == 1 and len(lines["WARN"]) == 2, lines
    assert "city CA issuing certificate expires" in warned and "(20 days)" in warned and "its CRL" in warned
    assert any(x.startswith("city CA: 1 certificate(s) ") for x in lines["OK"]), lines["OK"]

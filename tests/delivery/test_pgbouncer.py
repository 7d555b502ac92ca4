"""civicmail behind PgBouncer in transaction mode (issue 13, section 4): a PgBouncer the test starts
(Debian's `pgbouncer`, its own port, pool_mode = transaction, auth_type = any) in front of the
PostgreSQL test server. `init`'s set-up, two `civicmail serve` nodes and the pipeline all use it
(``store.url``), and each node's one LISTEN connection goes to PostgreSQL directly
(``store.listen_url``): SMTP to one node is told to an IMAP IDLE on the other, and a mailed drop
is delivered and counted once.

A pooled connection may run each transaction on another server connection: with psycopg's
prepared statements on (its default: a query prepared after five runs) the twenty deliveries
below would fail with "prepared statement ... does not exist"; a LISTEN through the pooler
would be lost, and the IDLE would hear of the mail only at the 30 s poll."""
from __future__ import annotations

import contextlib
import imaplib
import os
import sys
import re
import shutil
import signal
import smtplib
import subprocess
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from drophelpers import make_city, mail_pension_drop
from mailcheck import inbox_messages
from mailserver.bench.smtp import start_server
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.store import open_store
from mailserver.store.models import Notice, NoticeCount
from tests.conftest import make_config
from tests.serverkit import free_port, listening_port, on_free_ports, start_program

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
#: the server timeouts civicmail sends as startup options on a direct connection (db.py), set
#: here by PgBouncer on each server connection it opens, as docs/scale.md tells operators to
CONNECT_QUERY = "SET statement_timeout = 30000; SET idle_in_transaction_session_timeout = 30000"
MAILS = 20


@contextlib.contextmanager
def running_pgbouncer(pg_url: str, folder, connect_query: str | None = CONNECT_QUERY):
    """A PgBouncer in transaction mode in front of ``pg_url``'s server: (its URL of the same
    database, its port). ``connect_query``: what it runs on each server connection it opens.
    It cannot listen on port 0 and say which it got: it is started on a port free a moment
    before, and again on another if that one was taken meanwhile (serverkit.on_free_ports)."""
    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed (.ci/run installs Debian's pgbouncer)")
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    direct = make_url(pg_url)
    query = f" connect_query='{connect_query}'" if connect_query else ""

    def start(port: int) -> tuple[subprocess.Popen, int]:
        ini = folder / f"pgbouncer-{port}.ini"
        ini.write_text(f"""[databases]
* = host={direct.host} port={direct.port or 5432} user={direct.username}{query}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
admin_users = {direct.username}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
""")
        # PgBouncer refuses to run as root: as root it reads its file, then becomes postgres
        cmd = [PGBOUNCER] + (["-u", "postgres"] if os.geteuid() == 0 else []) + [str(ini)]
        # this, or its "cannot listen on ...: bind(): Address already in use" and exit
        return start_program(cmd, folder / f"pgbouncer-{port}.log", f"listening on 127.0.0.1:{port}", 20), port

    proc, port = on_free_ports(start)
    try:
        yield direct.set(port=port).render_as_string(hide_password=False), port
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def pgbouncer(pg_url, tmp_path):
    with running_pgbouncer(pg_url, tmp_path) as found:
        yield found


def _pool_stats(port: int, database: str) -> dict[str, int]:
    """PgBouncer's SHOW STATS row of ``database`` (its admin console speaks the simple query
    protocol only: psql)."""
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "pgbouncer", "-A",
                          "-F", "\t", "-c", "SHOW STATS"], capture_output=True, text=True, timeout=30, check=True)
    header, *rows = out.stdout.splitlines()
    names = header.split("\t")
    for row in rows:
        values = dict(zip(names, row.split("\t")))
        if values.get("database") == database:
            return {k: int(v) for k, v in values.items() if v.isdigit()}
    raise AssertionError(f"no pool for {database} in {out.stdout}")


def _mail(to: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.org", to, f"pooled {n}"
    msg.set_content(f"message {n}")
    return msg.as_bytes(policy=SMTP_POLICY)


def test_serve_and_a_drop_through_pgbouncer_with_listen_direct(pg_url, pgbouncer, tmp_path):
    pooled, port = pgbouncer
    sets = (f"store.url={pooled}", f"store.listen_url={pg_url}")
    config = make_config(tmp_path / "a", *sets)
    prepare(config)  # migrations through the pooler
    store = open_store(config)
    try:
        people = make_city(Registry(config, store))
        citizen = next(iter(people.values()))
        shutil.copytree(tmp_path / "a", tmp_path / "b")  # the second node: same keys and certificates
        nodes = [start_server(tmp_path / name / "civicmail.toml", sets) for name in ("a", "b")]
        try:
            log_a, log_b = nodes[0][3], nodes[1][3]
            imap_b, submission_a = listening_port(log_b, "imap"), listening_port(log_a, "SMTP submission")
            with imaplib.IMAP4("127.0.0.1", imap_b, timeout=30) as imap:
                imap.login(citizen, "citizen-pw-1")
                typ, data = imap.select("INBOX")
                assert typ == "OK" and data == [b"0"]
                tag = imap._new_tag().decode()
                imap.send(f"{tag} IDLE\r\n".encode())
                assert imap.readline().startswith(b"+ ")
                with smtplib.SMTP(nodes[0][1], nodes[0][2], timeout=30) as smtp:
                    for n in range(MAILS):
                        smtp.sendmail("someone@example.org", [citizen], _mail(citizen, n))
                # node b hears of node a's deliveries through its direct LISTEN, well before the
                # 30 s poll that stands behind it
                imap.sock.settimeout(10)
                seen = b""
                while b"EXISTS" not in seen:
                    seen = imap.readline()
                assert re.match(rb"\* \d+ EXISTS", seen), seen
                imap.send(b"DONE\r\n")
                while not (line := imap.readline()).startswith(tag.encode()):
                    pass
                assert b"OK" in line
                # a STORE's pipelined transaction (BEGIN to COMMIT) through the pooler, and a
                # second SELECT's pipelined read
                typ, data = imap.uid("STORE", "1", "+FLAGS", "(\\Flagged $Pooled)")
                assert typ == "OK" and b"$Pooled" in data[0], data
                typ, data = imap.select("INBOX")
                assert typ == "OK" and int(data[0]) >= 1, data
                typ, data = imap.uid("FETCH", "1", "(FLAGS)")
                assert typ == "OK" and b"\\Flagged" in data[0] and b"$Pooled" in data[0], data
            mail_pension_drop(config, "127.0.0.1", submission_a)
            deadline = time.monotonic() + 120
            while not inbox_messages(store, f"social-security@{config.city.domain}"):
                assert time.monotonic() < deadline, "".join(log_a[-20:] + log_b[-20:])
                time.sleep(0.1)
        finally:
            for proc, *_ in nodes:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(60) for proc, *_ in nodes]
        assert codes == [0, 0]
        assert len(inbox_messages(store, citizen)) >= MAILS
        with store.reader() as s:
            assert s.scalar(select(func.count(Notice.id))) == 3
            assert s.scalar(select(func.sum(NoticeCount.delivered))) == 3
        logs = "".join(log_a + log_b)
        assert "Traceback" not in logs and "prepared statement" not in logs and "LISTEN connection lost" not in logs
        # the work went through the pooler: its transactions, on few server connections
        stats = _pool_stats(port, make_url(pg_url).database)
        assert stats["total_xact_count"] > MAILS
    finally:
        store.dispose()


def _civicmail(config, *args: str) -> subprocess.CompletedProcess:
    from mailserver.config import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(config.source), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_check_names_what_the_pooler_set_up_lacks(pg_url, tmp_path):
    """`civicmail check` behind a pooler: the server timeouts from its connect_query, and the
    direct LISTEN connection."""
    config = make_config(tmp_path / "data", store_url=pg_url)
    prepare(config)

    def database_lines(pooled: str, listen: str) -> list[str]:
        out = _civicmail(config, "--set", f"store.url={pooled}", "--set", f"store.listen_url={listen}", "check")
        return [line for line in out.stdout.splitlines() if "database:" in line]

    with running_pgbouncer(pg_url, tmp_path) as (pooled, _):
        lines = database_lines(pooled, pg_url)
        assert "OK    database: through the pooler, statement and idle-transaction timeouts set" in lines, lines
        assert "OK    database: the LISTEN connection (store.listen_url) opens" in lines, lines
        closed = make_url(pg_url).set(port=free_port()).render_as_string(hide_password=False)
        assert any(line.startswith("FAIL  database: store.listen_url does not connect") for line in
                   database_lines(pooled, closed))
    with running_pgbouncer(pg_url, tmp_path, connect_query=None) as (pooled, _):
        lines = database_lines(pooled, pg_url)
        assert any(line.startswith("WARN  database: through the pooler, statement_timeout and "
                                   "idle_in_transaction_session_timeout off") for line in lines), lines


def test_listen_url_without_postgresql_is_a_clear_error(sqlite_config):
    out = _civicmail(sqlite_config, "--set", "store.listen_url=postgresql+psycopg://civicmail@db.internal/civicmail",
                     "stats")
    assert out.returncode != 0
    assert "store.listen_url: only for PostgreSQL behind a pooler" in out.stderr and "Traceback" not in out.stderr

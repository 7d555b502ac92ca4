"""External mail store mode (store.mode = "external", issue 13 item 5): a real Dovecot started by the
test (tests/dovecot.py) holds the mailboxes; the pipeline delivers a drop into it by LMTP, the
notices are read back over Dovecot's IMAP (imaplib), a rerun delivers nothing twice, a mailbox
Dovecot refuses is that row's failure (with its row number) while the others go through, and a
run the LMTP server stopped answering is resumed without a second copy. `civicmail serve` in
external mode starts no IMAP listener and hands SMTP mail for citizens to Dovecot."""
from __future__ import annotations

import csv
import email
import imaplib
import os
import re
import smtplib
import time
from email.message import EmailMessage

import pytest
from sqlalchemy import delete, func, select, update

from delivery.compose import message_id
from delivery.runner import retry_drop, run_drop
from drophelpers import CATALOG, make_city
from mailserver import config as config_mod
from mailserver.errors import ConfigError, StoreUnavailable
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.store import open_store
from mailserver.store.models import Account, Drop, DropRow, Notice, NoticeCount
from tests.conftest import make_config
from tests.dovecot import PASSWORD, dovecot_or_skip, sieve_missing, start_dovecot
from tests.serverkit import closed_port

SAMPLE = CATALOG["licence-renewal"].folder / "sample.csv"
#: the sample's rows (row 1 is the header), by the citizen's ID number
ROWS = {"330102196804120318": 2, "33010519790903062X": 3, "330109197507080777": 4}
#: the one Dovecot has no mailbox for: its row must fail with Dovecot's reply
REFUSED = "33010519790903062X"


@pytest.fixture
def external_city(tmp_path, request):
    """A city in external mode, on SQLite (on PostgreSQL too where the test asks for
    ``external_store_url``), and a Dovecot holding every citizen's mailbox but one (with README's
    Sieve rule that drops a second copy of a notice, if the test is marked dedupe)."""
    dovecot_or_skip()
    dedupe = request.node.get_closest_marker("dedupe") is not None
    if dedupe and (reason := sieve_missing()):
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    url = request.getfixturevalue("store_url") if "store_url" in request.fixturenames else None
    config = make_config(tmp_path / "data", 'store.mode="external"', 'lmtp.target="127.0.0.1:1"', store_url=url)
    prepare(config)
    store = open_store(config)
    city = make_city(Registry(config, store))
    server = start_dovecot([a for n, a in city.items() if n != REFUSED], dedupe=dedupe)
    config = config.replace(lmtp=config_mod.LMTPConfig(target=server.lmtp_target, retry_seconds=1.0))
    try:
        yield Registry(config, store), city, server
    finally:
        server.stop()
        store.dispose()


def inbox(server, address: str) -> list[email.message.Message]:
    """The messages in a Dovecot mailbox, read over its IMAP as a mail client would."""
    with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30) as imap:
        imap.login(address, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "ALL")
        out = []
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            out.append(email.message_from_bytes(fetched[0][1]))
        return out


def report_rows(config, drop_id: int) -> dict[int, dict[str, str]]:
    with open(config.data_path("drops") / str(drop_id) / "report.csv", encoding="utf-8-sig", newline="") as fh:
        return {int(r["row"]): r for r in csv.DictReader(fh)}


def counted(store) -> int:
    """The notices `civicmail stats` counts (its maintained counter)."""
    with store.reader() as s:
        return int(s.scalar(select(func.coalesce(func.sum(NoticeCount.delivered), 0))))


def notice_keys(store) -> dict[int, tuple[str, str | None]]:
    with store.reader() as s:
        return {a: (k, st) for k, a, st in s.execute(select(Notice.idempotency_key, Notice.account_id, Notice.state))}


def test_a_drop_goes_into_dovecot_once_and_a_refused_mailbox_is_its_rows_failure(store_url, external_city):
    reg, city, server = external_city
    result = run_drop(reg, SAMPLE, "traffic-police", "licence-renewal")
    assert result.summary.counts == {"delivered": 2, "failed": 1}, server.log()
    rows = report_rows(reg.config, result.drop_id)
    refused_row = rows[ROWS[REFUSED]]
    assert refused_row["drop_status"] == "failed"
    assert "550" in refused_row["drop_reason"] and "external mail store refused it" in refused_row["drop_reason"]
    assert all(rows[ROWS[n]]["drop_status"] == "delivered" for n in ROWS if n != REFUSED)

    keys = notice_keys(reg.store)
    assert len(keys) == 2 and all(state is None for _, state in keys.values())  # the refused key is free again
    for number in ROWS:
        if number == REFUSED:
            continue
        got = inbox(server, city[number])
        assert len(got) == 1, server.log()
        subject = str(email.header.make_header(email.header.decode_header(got[0]["Subject"])))
        assert "驾驶证" in subject
    # the Message-ID is the key's, so the external store can tell a second copy (README)
    ids = {got["Message-ID"] for number in ROWS if number != REFUSED for got in inbox(server, city[number])}
    assert ids == {message_id(k, "licence-renewal", reg.config.city.domain.lower()) for k, _ in keys.values()}

    again = run_drop(reg, SAMPLE, "traffic-police", "licence-renewal", force=True)
    assert again.summary.counts == {"duplicate": 2, "failed": 1}
    for number in ROWS:
        if number != REFUSED:
            assert len(inbox(server, city[number])) == 1

    # the operator has the mailbox made in Dovecot, then `drop retry` sends the failed row
    server.add_user(city[REFUSED])
    retried = retry_drop(reg, result.drop_id)
    assert retried.counts == {"delivered": 1}
    assert report_rows(reg.config, result.drop_id)[ROWS[REFUSED]]["drop_status"] == "delivered"
    assert all(len(inbox(server, city[number])) == 1 for number in ROWS)


def test_a_run_the_lmtp_server_stopped_resumes_and_delivers_each_notice_once(store_url, external_city):
    reg, city, server = external_city
    others = {n for n in ROWS if n != REFUSED}
    with closed_port() as port:  # nothing answers there, nor can anything start to
        down = Registry(reg.config.replace(lmtp=config_mod.LMTPConfig(target=f"127.0.0.1:{port}",
                                                                      retry_seconds=0.5)), reg.store)
        with pytest.raises(StoreUnavailable, match="external mail store .* gave no answer"):
            run_drop(down, SAMPLE, "traffic-police", "licence-renewal")
    with reg.store.reader() as s:
        assert s.scalar(select(Drop.state)) == "failed"
    # the batch's keys were recorded before LMTP was tried: still 'sending', their rows unrecorded
    assert {state for _, state in notice_keys(reg.store).values()} == {"sending"}
    assert counted(reg.store) == 0  # a notice being sent is not counted as delivered

    # resumed through Dovecot's unix socket this time (lmtp.target = "unix:/path")
    unix = Registry(reg.config.replace(lmtp=config_mod.LMTPConfig(target=f"unix:{server.dir}/run/lmtp")), reg.store)
    resumed = run_drop(unix, SAMPLE, "traffic-police", "licence-renewal")
    assert resumed.resumed and resumed.summary.counts == {"delivered": 2, "failed": 1}
    assert all(state is None for _, state in notice_keys(reg.store).values())
    assert counted(reg.store) == 2  # counted once, when the 250 was recorded
    for number in others:
        assert len(inbox(server, city[number])) == 1, server.log()


@pytest.mark.dedupe
def test_a_notice_sent_again_after_a_crash_past_the_250_is_dropped_by_the_stores_sieve_rule(external_city):
    """The one window exactly-once cannot close from this side: the store said 250, and the run
    died before recording it. Here the run completes, then the store is put back in the state
    such a crash leaves (the keys 'sending', the batch's rows unrecorded, the drop not done). The
    resumed run sends both notices again, with the same Message-ID, and README's Sieve rule in
    Dovecot drops the copies: each mailbox still has one."""
    reg, city, server = external_city
    first = run_drop(reg, SAMPLE, "traffic-police", "licence-renewal")
    assert first.summary.counts == {"delivered": 2, "failed": 1}, server.log()
    with reg.store.session() as s:
        s.execute(update(Notice).values(state="sending"))
        s.execute(delete(DropRow).where(DropRow.drop_id == first.drop_id))
        s.execute(update(Drop).values(state="running", owner=None, lease_until=None, rows_total=0, rows_delivered=0,
                                      rows_rejected=0))
    resumed = run_drop(reg, SAMPLE, "traffic-police", "licence-renewal")
    assert resumed.resumed and resumed.summary.counts == {"delivered": 2, "failed": 1}
    assert server.log().count("Marked message to be discarded") == 2  # the two copies, by Dovecot's own account
    for number in ROWS:
        if number != REFUSED:
            assert len(inbox(server, city[number])) == 1, server.log()


def test_starttls_to_the_lmtp_server_verifies_its_certificate(tmp_path):
    """lmtp.starttls: the session is encrypted and the server's certificate checked against
    lmtp.cafile (here the test city's own self-signed one, which names 127.0.0.1)."""
    dovecot_or_skip()
    config = make_config(tmp_path / "data", 'store.mode="external"', 'lmtp.target="127.0.0.1:1"')
    prepare(config)
    store = open_store(config)
    city = make_city(Registry(config, store))
    cert, key = config.data_path(config.tls.cert), config.data_path(config.tls.key)
    server = start_dovecot(list(city.values()), tls=(cert, key))
    try:
        untrusted = Registry(config.replace(lmtp=config_mod.LMTPConfig(
            target=server.lmtp_target, starttls=True, retry_seconds=0.5)), store)  # the system's CAs only
        with pytest.raises(StoreUnavailable, match="gave no answer"):
            run_drop(untrusted, SAMPLE, "traffic-police", "licence-renewal")
        assert "Connect from" in server.log()  # it was reached, and refused for its certificate
        trusted = Registry(config.replace(lmtp=config_mod.LMTPConfig(
            target=server.lmtp_target, starttls=True, cafile=str(cert))), store)
        result = run_drop(trusted, SAMPLE, "traffic-police", "licence-renewal")
        assert result.resumed and result.summary.counts == {"delivered": 3}, server.log()
        assert all(len(inbox(server, city[number])) == 1 for number in ROWS)
    finally:
        server.stop()
        store.dispose()


def test_a_mailbox_the_store_defers_fails_its_row_after_a_short_retry_and_the_others_go_through(tmp_path):
    """A 4xx for one mailbox (Dovecot cannot look its user up) is tried again for
    lmtp.deferred_retry_seconds, not lmtp.retry_seconds: its row fails, retryable, and the batch
    goes on."""
    dovecot_or_skip()
    config = make_config(tmp_path / "data", 'store.mode="external"', 'lmtp.target="127.0.0.1:1"')
    prepare(config)
    store = open_store(config)
    city = make_city(Registry(config, store))
    server = start_dovecot(list(city.values()), deferring=(city[REFUSED],))
    try:
        reg = Registry(config.replace(lmtp=config_mod.LMTPConfig(target=server.lmtp_target, retry_seconds=600,
                                                                 deferred_retry_seconds=1.0)), store)
        started = time.monotonic()
        result = run_drop(reg, SAMPLE, "traffic-police", "licence-renewal")
        assert time.monotonic() - started < 120  # not lmtp.retry_seconds
        assert result.summary.counts == {"delivered": 2, "failed": 1}, server.log()
        row = report_rows(config, result.drop_id)[ROWS[REFUSED]]
        assert row["drop_status"] == "failed" and "deferred it" in row["drop_reason"] and "451" in row["drop_reason"]
        assert server.log().count(f"rcpt {city[REFUSED]}: Failed to initialize user") >= 2  # tried again
    finally:
        server.stop()
        store.dispose()


def test_check_says_whether_the_lmtp_server_answers(external_city):
    from tests.cahelpers import civicmail

    reg, _city, server = external_city
    mode = ("--set", "store.mode=external", "--set", f"lmtp.target={server.lmtp_target}")
    up = civicmail(reg.config, *mode, "check")
    assert f"OK    external mail store: LMTP {server.lmtp_target} answers" in up.stdout, up.stdout + up.stderr
    server.stop()
    down = civicmail(reg.config, *mode, "check")
    assert down.returncode == 2
    assert f"FAIL  external mail store: LMTP {server.lmtp_target} does not answer" in down.stdout


def test_external_mode_needs_its_lmtp_target(tmp_path):
    with pytest.raises(ConfigError, match="lmtp.target"):
        make_config(tmp_path / "a", 'store.mode="external"')
    with pytest.raises(ConfigError, match="store.mode"):
        make_config(tmp_path / "b", 'store.mode="dovecot"')
    with pytest.raises(ConfigError, match="lmtp.target"):
        make_config(tmp_path / "c", 'store.mode="external"', 'lmtp.target="nohost"')
    with pytest.raises(ConfigError, match="absolute path"):
        make_config(tmp_path / "d", 'store.mode="external"', 'lmtp.target="unix:dovecot/lmtp"')
    config = make_config(tmp_path / "e", 'store.mode="external"', 'lmtp.target="unix:/run/dovecot/lmtp"')
    assert config.external_store and config.lmtp.target == "unix:/run/dovecot/lmtp"
    # mail clients are not told of civicmail's IMAP ports (autoconfig, SRV records): none is started
    assert {protocol for protocol, *_ in config.client_endpoints()} == {"smtp"}
    assert {protocol for protocol, *_ in make_config(tmp_path / "f").client_endpoints()} == {"imap", "smtp"}


def wait_for(server, address: str, subject: str) -> list[email.message.Message]:
    """The messages with ``subject`` in a Dovecot mailbox, once there is one (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        got = [m for m in inbox(server, address)
               if subject in str(email.header.make_header(email.header.decode_header(m["Subject"] or "")))]
        if got:
            return got
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)


def test_serve_in_external_mode_starts_no_imap_and_hands_smtp_mail_to_dovecot(external_city, caplog):
    from mailserver.services.service import ServicesWorker
    from mailserver.services.topics import add_topic
    from tests.serverkit import LoopServer

    reg, city, server = external_city
    topic = add_topic(reg, "policy", "政策法规")
    number = next(n for n in ROWS if n != REFUSED)
    # the port IMAP is given is held (not listening) up to the probe: refused unless IMAP listens
    # there, which could not bind it either; a port only free a moment ago might be answered by
    # whatever took it since
    with closed_port() as imap_port:
        config = reg.config.replace(
            smtp=config_mod.SMTPConfig(listen="127.0.0.1:0"), submission=config_mod.SubmissionConfig(listen="127.0.0.1:0"),
            submissions=config_mod.SubmissionsConfig(listen=""),
            imap=config_mod.IMAPConfig(listen=f"127.0.0.1:{imap_port}"),
            imaps=config_mod.IMAPSConfig(listen=""), http=config_mod.HTTPConfig(listen="", metrics=False))
        with caplog.at_level("INFO", logger="civicmail.imap"):
            running = LoopServer(config).start()
        try:
            assert 'IMAP not started: store.mode = "external"' in caplog.text
            with pytest.raises(OSError):
                socket_probe(imap_port)
        except BaseException:
            running.stop()
            raise
    try:
        # mail from the internet to two citizens: one message, one LMTP transaction for both
        other = next(n for n in ROWS if n not in (REFUSED, number))
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "friend@elsewhere.example", city[number], "external hello"
        msg["Cc"], msg["Message-ID"] = city[other], "<external-hello@elsewhere.example>"
        msg.set_content("by LMTP, through the queue")
        with smtplib.SMTP("127.0.0.1", running.port("smtp"), timeout=30) as smtp:
            smtp.send_message(msg)
        got = wait_for(server, city[number], "external hello")
        assert len(got) == 1 and got[0]["Received"]  # civicmail's trace header, then Dovecot's
        assert len(wait_for(server, city[other], "external hello")) == 1
        # Dovecot names a transaction's session, and each further recipient in it ":R<n>". Its log
        # process writes the lines after the mail is readable: both are waited for
        deadline = time.monotonic() + 30
        while True:
            sessions = re.findall(r"<\d+><([^>]+)>: Info: msgid=<external-hello@elsewhere.example>: saved mail",
                                  server.log())
            if len(sessions) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(sessions) == 2 and len({re.sub(r":R\d+$", "", x) for x in sessions}) == 1, sessions
        assert running.inbox(city[number]) == []  # nothing in civicmail's own store

        # a service: the citizen subscribes by mail to a topic address (kept in civicmail's store,
        # where the services worker reads it); the confirmation reaches her mailbox in Dovecot
        subscribe = EmailMessage()
        subscribe["From"], subscribe["To"], subscribe["Subject"] = city[number], topic.address, "subscribe"
        subscribe.set_content("")
        with smtplib.SMTP("127.0.0.1", running.port("submission"), timeout=30) as smtp:
            smtp.login(city[number], "citizen-pw-1")
            smtp.send_message(subscribe)
        worker = next(s for s in running.services if isinstance(s, ServicesWorker))
        running.call(worker.run_once())
        confirmation = wait_for(server, city[number], "政策法规")
        assert len(confirmation) == 1 and confirmation[0]["From"] and topic.address in confirmation[0]["From"]
    finally:
        running.stop()


def socket_probe(port: int) -> None:
    import socket

    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def maildir_counts(server) -> dict[str, int]:
    """Messages per mailbox, counted in Dovecot's Maildirs (new and cur)."""
    counts = {}
    for home in (server.dir / "mail").iterdir():
        counts[home.name] = sum(len(list((home / "Maildir" / sub).iterdir()))
                                for sub in ("new", "cur") if (home / "Maildir" / sub).is_dir())
    return counts


ROWS_KILLED = 1000


@pytest.mark.slow
def test_a_killed_run_resumes_and_each_mailbox_in_dovecot_holds_its_notice_once(tmp_path):
    """`civicmail drop run` in external mode, SIGKILLed while Dovecot is storing its notices, then
    run again: every one of 1,000 mailboxes holds its notice once. What the resumed run sent
    twice (at most the batch that was between LMTP and its record when the process died) is
    what README's Sieve rule dropped, by Dovecot's own count."""
    import signal
    import subprocess
    import sys

    from mailserver.bench.pipeline import write_drop
    from mailserver.bench.util import write_citizens_csv
    from mailserver.registry.bulk import import_file

    dovecot_or_skip()
    if reason := sieve_missing():
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    config = make_config(tmp_path / "data")
    prepare(config)
    store = open_store(config)
    reg = Registry(config, store)
    make_city(reg)
    citizens, drop = tmp_path / "citizens.csv", tmp_path / "drop.csv"
    write_citizens_csv(citizens, ROWS_KILLED, seed=11)
    assert import_file(reg, citizens, None).imported == ROWS_KILLED
    assert write_drop(citizens, drop) == ROWS_KILLED
    with store.reader() as s:
        addresses = list(s.scalars(select(Account.address).where(Account.citizen_id.is_not(None))))
    server = start_dovecot(addresses, dedupe=True)
    batch = 100
    cmd = [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), "--set", "store.mode=external",
           "--set", f"lmtp.target={server.lmtp_target}", "--set", f"delivery.batch_size={batch}",
           "drop", "run", str(drop), "--agency", "traffic-police",
           "--notice-type", "licence-renewal"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while sum(maildir_counts(server).values()) < 250:  # some batches stored, most not
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stored = sum(maildir_counts(server).values())
        assert 250 <= stored < ROWS_KILLED

        again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0 and "(resumed)" in again.stdout, again.stdout + again.stderr
        counts = maildir_counts(server)
        assert len(counts) == ROWS_KILLED and set(counts.values()) == {1}, server.log()[-3000:]
        with store.reader() as s:
            assert s.scalar(select(func.count(Notice.id)).where(Notice.state.is_(None))) == ROWS_KILLED
            assert s.scalar(select(func.count(Notice.id)).where(Notice.state.is_not(None))) == 0
            rows = dict(s.execute(select(DropRow.status, func.count(DropRow.id)).group_by(DropRow.status)).all())
        assert rows == {"delivered": ROWS_KILLED}  # the killed batch's rows too: sent again, not skipped
        # what was resent (the batch in flight at the kill: 54 of 100 in one run here) was dropped
        assert server.log().count("Marked message to be discarded") <= batch
    finally:
        server.stop()
        store.dispose()

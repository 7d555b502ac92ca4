"""The ways in besides the CLI: the spool folder watched by `civicmail serve`, and drops mailed
to drops@<domain> by an authenticated agency (read from the store, answered into its mailbox)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from email.message import EmailMessage

from sqlalchemy import select

from delivery.maildrop import drop_address, ensure_drop_mailbox, process_new_mail
from delivery.service import MailDropWatcher, SpoolWatcher
from drophelpers import CATALOG
from mailcheck import count_notices, inbox_messages, parse
from mailserver.registry import Registry
from mailserver.server import ServerContext
from mailserver.store import open_store
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account


@contextlib.contextmanager
def running(config, service_class):
    store = open_store(config)
    ctx = ServerContext(config, store, Registry(config, store))
    loop = asyncio.new_event_loop()
    service = service_class(ctx, interval=0.1)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
    try:
        yield service
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        ctx.shutdown()
        store.dispose()


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_spool_watcher(sqlite_registry, sqlite_city):
    config = sqlite_registry.config
    folder = config.data_path(config.delivery.spool_dir) / "traffic-police" / "licence-renewal"
    folder.mkdir(parents=True)
    good = CATALOG["licence-renewal"].folder / "sample.csv"
    with running(config, SpoolWatcher):
        partial = folder / "today.csv.part"  # being written: not touched
        partial.write_bytes(good.read_bytes())
        bad = folder / "broken.csv"
        bad.write_text("id_number,name\n1,2\n", encoding="utf-8")
        wait_for(lambda: (folder / "failed" / "broken.csv").exists())
        assert partial.exists() and count_notices(sqlite_registry.store) == 0
        partial.rename(folder / "today.csv")
        wait_for(lambda: (folder / "done" / "today.csv").exists())
    assert not (folder / "today.csv").exists() and not bad.exists()
    assert "licence_number, expiry_date, office" in (folder / "failed" / "broken.csv.error.txt").read_text()
    report = (folder / "done" / "today.csv.report.csv").read_text(encoding="utf-8-sig")
    assert report.count(",delivered,") == 3
    assert count_notices(sqlite_registry.store) == 3


def _mail(agency: str | None, subject: str, attachment: bytes | None, notice_type: str | None = None,
          domain: str = "hz.example.cn") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{agency or 'someone'}@{domain}"
    msg["To"] = f"drops@{domain}"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<drop-{abs(hash(subject))}@{domain}>"
    if agency:
        msg["X-Civicmail-Authenticated"] = f"agency={agency}"
    if notice_type:
        msg["X-Civicmail-Notice-Type"] = notice_type
    msg.set_content("见附件 / see the attachment")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="text", subtype="csv", filename="本月数据.csv")
    return msg.as_bytes()


def test_drop_by_mail(sqlite_registry, sqlite_city):
    reg = sqlite_registry
    assert ensure_drop_mailbox(reg) and not ensure_drop_mailbox(reg)  # `init` and `serve` make it
    with reg.store.reader() as s:
        drops = s.scalar(select(Account.id).where(Account.address == drop_address(reg)))
    sample = (CATALOG["pension-statement"].folder / "sample.csv").read_bytes()
    forged = _mail(None, "pension-statement", sample)
    forged = forged.replace(b"Subject:", b"X-Civicmail-Authenticated: agency=social-security\r\n"
                                         b"X-Civicmail-Authenticated: agency=social-security\r\nSubject:")
    deliver(reg.store, forged, [drops])  # two trusted headers: forged, ignored
    deliver(reg.store, _mail("social-security", "本月养老对账 pension-statement", sample), [drops])
    deliver(reg.store, _mail("social-security", "没有类型", sample), [drops])
    results = process_new_mail(reg)
    assert [r.agency for r in results] == [None, "social-security", "social-security"]
    assert count_notices(reg.store) == 3
    assert "delivered 3" in results[1].summary and "No notice type" in results[2].summary
    assert process_new_mail(reg) == []  # each message once

    replies = [parse(r) for r in inbox_messages(reg.store, f"social-security@{reg.domain}")]
    assert len(replies) == 2
    assert replies[0]["In-Reply-To"] == f"<drop-{abs(hash('本月养老对账 pension-statement'))}@hz.example.cn>"
    assert "delivered 3" in replies[0].get_content()


def test_drop_by_mail_through_the_service(sqlite_registry, sqlite_city):
    reg = sqlite_registry
    sample = (CATALOG["provident-fund-statement"].folder / "sample.csv").read_bytes().decode("utf-8")
    gb = sample.encode("gb18030")  # as Excel saves it in China
    with running(reg.config, MailDropWatcher):  # starting it makes the drop mailbox
        with reg.store.reader() as s:
            drops = s.scalar(select(Account.id).where(Account.address == drop_address(reg)))
        deliver(reg.store, _mail("housing-fund", "公积金对账", gb, notice_type="provident-fund-statement"), [drops])
        wait_for(lambda: len(inbox_messages(reg.store, f"housing-fund@{reg.domain}")) == 1)
    assert count_notices(reg.store) == 3


def test_drop_mailed_over_smtp_submission(tmp_path):
    """End to end: the agency logs in over submission and mails the CSV to drops@; SMTP stores
    it with the trusted header; the drop watcher reads it from the store and runs it."""
    import smtplib

    from drophelpers import make_city
    from mailserver.provision import prepare
    from mailserver.smtp.service import make_services
    from tests.conftest import make_config

    config = make_config(tmp_path / "data", "smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0",
                         "submissions.listen=127.0.0.1:0")
    prepare(config)
    store = open_store(config)
    reg = Registry(config, store)
    make_city(reg)
    ensure_drop_mailbox(reg)  # as `civicmail init` does
    ctx = ServerContext(config, store, reg)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    services = make_services(ctx)

    async def up():
        for s in services:
            await s.start()

    async def down():
        for s in reversed(services):
            await s.stop()

    asyncio.run_coroutine_threadsafe(up(), loop).result(30)
    try:
        port = next(s.address[1] for s in services if getattr(s, "kind", None) == "submission")
        msg = EmailMessage()
        msg["From"] = f"social-security@{reg.domain}"
        msg["To"] = drop_address(reg)
        msg["Subject"] = "十一月 pension-statement"
        msg.set_content("见附件")
        msg.add_attachment((CATALOG["pension-statement"].folder / "sample.csv").read_bytes(), maintype="text",
                           subtype="csv", filename="pension.csv")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                import ssl

                tls = ssl.create_default_context()
                tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
                smtp.starttls(context=tls)
                smtp.ehlo()
            smtp.login("social-security", "agency-password-1")
            smtp.send_message(msg)
        results = process_new_mail(reg)
        assert [r.agency for r in results] == ["social-security"], results
        assert count_notices(store) == 3
        assert len(inbox_messages(store, f"social-security@{reg.domain}")) == 1
    finally:
        asyncio.run_coroutine_threadsafe(down(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        ctx.shutdown()
        store.dispose()


def test_a_mailed_drop_writes_its_line_to_the_serve_log(tmp_path):
    """`civicmail serve` as operators run it: a drop mailed by an agency over submission gets its
    line in the log, as a spooled drop does (and the spooled one still does)."""
    import re
    from drophelpers import mail_pension_drop, make_city
    from mailserver.bench.smtp import start_server, stop_server
    from mailserver.provision import prepare
    from tests.conftest import make_config

    config = make_config(tmp_path / "data")
    prepare(config)
    store = open_store(config)
    try:
        make_city(Registry(config, store))
    finally:
        store.dispose()
    spooled = config.data_path(config.delivery.spool_dir) / "traffic-police" / "licence-renewal"
    spooled.mkdir(parents=True)
    proc, host, _, log = start_server(config.source)
    try:
        port = int(re.search(r"SMTP submission listening on [\d.]+:(\d+)", "".join(log)).group(1))
        mail_pension_drop(config, host, port)
        (spooled / "today.csv").write_bytes((CATALOG["licence-renewal"].folder / "sample.csv").read_bytes())
        store = open_store(config)
        try:  # both drops ran: the agency has its answer, the spooled file is done
            wait_for(lambda: inbox_messages(store, f"social-security@{config.city.domain}")
                     and (spooled / "done" / "today.csv.report.csv").exists())
        finally:
            store.dispose()
        wait_for(lambda: sum(" drop " in line for line in log) >= 2, timeout=10)
    finally:
        assert stop_server(proc, log) == 0
    [mailed] = [line for line in log if "mail social-security/" in line]
    assert re.search(r"INFO .*mail social-security/pension-statement/pension.csv \(message 1\): drop \d+: "
                     r"delivered 3$", mailed.rstrip()), mailed
    [spool] = [line for line in log if "spool traffic-police/" in line]
    assert re.search(r"spool traffic-police/licence-renewal/today.csv: drop \d+: delivered 3$", spool.rstrip()), spool

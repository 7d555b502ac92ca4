"""Issue 11, item 13: one bad drop never stops drop processing. Against a running `serve` (every
service, real sockets): files that used to crash the spool watcher (a JSON line of 100,000 ``[``,
a workbook with a DTD) and mail that used to crash the drop-mailbox watcher (an attachment named
with an encoded NUL, a subject with an encoded CR/LF) are set aside with their reason, and a good
drop after them is delivered."""
from __future__ import annotations

import os
import smtplib
import time

from delivery import spool as spool_mod
from drophelpers import CATALOG, make_city
from mailcheck import count_notices, inbox_messages, parse
from tests.abuse import assert_responsive, city, city_factory  # noqa: F401  (fixtures)
from xlsxcraft import XXE_PROLOG, write_workbook

AGENCY_PASSWORD = "agency-password-1"


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _watcher(city, name: str):  # noqa: F811
    """The running watcher ``name``, made to poll every 0.1 s."""
    watcher = next(s for s in city.server.services if getattr(s, "name", None) == name)
    watcher.interval = 0.1
    return watcher


def _sample(notice_type: str) -> bytes:
    return (CATALOG[notice_type].folder / "sample.csv").read_bytes()


def _spool(city, agency: str, notice_type: str):  # noqa: F811
    config = city.server.config
    folder = config.data_path(config.delivery.spool_dir) / agency / notice_type
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _put(folder, name: str, data: bytes, age: float) -> None:
    """Write a file the way an agency should (a temporary name, then a rename), ``age`` seconds old:
    the watcher takes files oldest first."""
    tmp = folder / (name + ".part")
    tmp.write_bytes(data)
    then = time.time() - age
    os.utime(tmp, (then, then))
    tmp.rename(folder / name)


def test_spooled_files_that_crashed_the_watcher_are_set_aside_and_the_next_drop_runs(city, tmp_path):  # noqa: F811
    make_city(city.server.registry)
    bad = _spool(city, "social-security", "pension-statement")
    good = _spool(city, "traffic-police", "licence-renewal")
    header = "reference,id_number,name,period,contribution,balance,months_contributed".split(",")
    xxe = write_workbook(tmp_path / "xxe.xlsx", header, [["R1"] * 7], sheet_prolog=XXE_PROLOG,
                         cell_xml={(2, 0): "&x;"})
    _put(bad, "deep.jsonl", b"[" * 100_000 + b"\n", age=30)
    _put(bad, "xxe.xlsx", xxe.read_bytes(), age=20)
    _put(good, "today.csv", _sample("licence-renewal"), age=10)
    _watcher(city, "spool")
    assert_responsive(city)
    wait_for(lambda: (good / "done" / "today.csv").exists())
    assert count_notices(city.server.store) == 3
    assert not any(bad.glob("*.jsonl")) and not any(bad.glob("*.xlsx"))
    deep = (bad / "failed" / "deep.jsonl.error.txt").read_text(encoding="utf-8")
    assert "line 1" in deep and "JSON nested deeper than 16 levels" in deep
    assert "declares a DTD" in (bad / "failed" / "xxe.xlsx.error.txt").read_text(encoding="utf-8")


def test_any_exception_of_one_spooled_file_sets_it_aside(city, monkeypatch):  # noqa: F811
    """The shunt itself, whatever the fault: a run_drop that raises what nobody foresaw."""
    make_city(city.server.registry)
    folder = _spool(city, "traffic-police", "licence-renewal")
    real_run_drop = spool_mod.run_drop

    def run_drop(reg, path, *args, **kwargs):
        if path.name == "boom.csv":
            raise KeyError("a fault inside civicmail")
        return real_run_drop(reg, path, *args, **kwargs)

    monkeypatch.setattr(spool_mod, "run_drop", run_drop)
    _put(folder, "boom.csv", b"anything\n", age=20)
    _put(folder, "today.csv", _sample("licence-renewal"), age=10)
    _watcher(city, "spool")
    wait_for(lambda: (folder / "done" / "today.csv").exists())
    note = (folder / "failed" / "boom.csv.error.txt").read_text(encoding="utf-8")
    assert "internal error (KeyError)" in note and "a fault inside" not in note  # the text is the log's
    assert count_notices(city.server.store) == 3


def _submit(city, raw_messages: list[bytes]) -> None:  # noqa: F811
    """Mail as the traffic police over submission (AUTH on loopback in development mode)."""
    domain = city.server.registry.domain
    with smtplib.SMTP("127.0.0.1", city.port("submission"), timeout=30) as smtp:
        smtp.login("traffic-police", AGENCY_PASSWORD)
        for raw in raw_messages:
            smtp.sendmail(f"traffic-police@{domain}", [f"drops@{domain}"], raw)


def _drop_mail(domain: str, subject: str, disposition: str, content_type: str, payload: bytes) -> bytes:
    """A drop mail written by hand: the header fields are exactly as given (email would re-encode)."""
    import base64

    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (f"From: traffic-police@{domain}\r\nTo: drops@{domain}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}.{time.time_ns()}@{domain}>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee the attachment\r\n"
            f"--b\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: {disposition}\r\n\r\n").encode() + body + b"--b--\r\n"


def test_mailed_drops_that_crashed_the_watcher_are_answered_and_the_next_drop_runs(city, tmp_path):  # noqa: F811
    make_city(city.server.registry)
    domain = city.server.registry.domain
    header = "reference,id_number,name,decision_number,amount,due_date,late_fee".split(",")
    xxe = write_workbook(tmp_path / "xxe.xlsx", header, [["R1"] * 7], sheet_prolog=XXE_PROLOG,
                         cell_xml={(2, 0): "&x;"}).read_bytes()
    csv_type = "text/csv; charset=utf-8"
    xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    _watcher(city, "maildrop")
    _submit(city, [
        # RFC 2231 lets a file name carry a NUL: no file may be named so
        _drop_mail(domain, "licence-renewal", "attachment; filename*=utf-8''bad%00.csv", csv_type,
                   _sample("licence-renewal")),
        # an encoded CR/LF decodes into a line break: the summary's Re: subject could not carry it
        _drop_mail(domain, "=?utf-8?q?vehicle-inspection=0D=0ABcc:_someone@example.org?=",
                   'attachment; filename="vi.csv"', csv_type, _sample("vehicle-inspection")),
        _drop_mail(domain, "overdue-fine", 'attachment; filename="fines.xlsx"', xlsx_type, xxe),
        _drop_mail(domain, "violation-points", 'attachment; filename="points.csv"', csv_type,
                   _sample("violation-points")),
    ])
    assert_responsive(city)
    mailbox = f"traffic-police@{domain}"
    wait_for(lambda: len(inbox_messages(city.server.store, mailbox)) == 4)
    assert count_notices(city.server.store) == 3 + 3 + 3
    replies = [parse(raw) for raw in inbox_messages(city.server.store, mailbox)]
    texts = [r.get_content() for r in replies]
    assert "bad.csv: drop" in texts[0] and "delivered 3" in texts[0]
    assert "\n" not in str(replies[1]["Subject"]) and "vehicle-inspection Bcc:" in str(replies[1]["Subject"])
    assert replies[1]["Bcc"] is None and "delivered 3" in texts[1]
    assert "fines.xlsx: 未处理 / not run:" in texts[2] and "declares a DTD" in texts[2]
    assert "points.csv: drop" in texts[3] and "delivered 3" in texts[3]


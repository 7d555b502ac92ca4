"""The operator's commands: drop run/list/status/report/retry, notice list/show/preview, opt-out."""
from __future__ import annotations

import csv
import datetime as dt
import imaplib
import re

from click.testing import CliRunner

from drophelpers import CATALOG, write_csv
from imap_helpers import imap_server
from mailcheck import count_notices
from mailserver.cli import cli
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen, set_password
from mailserver.store.models import Drop


def invoke(config, *args):
    result = CliRunner().invoke(cli, ["-c", str(config.source), *args], catch_exceptions=False)
    return result


def test_drop_commands(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    sample = CATALOG["licence-suspension"].folder / "sample.csv"
    dry = invoke(config, "drop", "run", str(sample), "--agency", "traffic-police", "--notice-type",
                 "licence-suspension", "--dry-run")
    assert dry.exit_code == 0 and "would deliver  2" in dry.output and count_notices(sqlite_registry.store) == 0
    run = invoke(config, "drop", "run", str(sample), "--agency", "traffic-police", "--notice-type",
                 "licence-suspension")
    assert run.exit_code == 0 and "delivered  2" in run.output and "notices/s" in run.output
    again = CliRunner().invoke(cli, ["-c", str(config.source), "drop", "run", str(sample), "--agency",
                                     "traffic-police", "--notice-type", "licence-suspension"])
    assert again.exit_code != 0
    listing = invoke(config, "drop", "list")
    assert "licence-suspension" in listing.output and "done" in listing.output
    status = invoke(config, "drop", "status", "1")
    assert "delivered" in status.output and "sample.csv" in status.output
    out = tmp_path / "report.csv"
    assert invoke(config, "drop", "report", "1", "-o", str(out)).exit_code == 0
    with open(out, encoding="utf-8-sig", newline="") as fh:
        assert [r["drop_status"] for r in csv.DictReader(fh)] == ["delivered", "delivered"]
    assert "licence-renewal" in invoke(config, "notice", "list").output
    shown = invoke(config, "notice", "show", "medical-statement")
    assert "insurance_paid + self_paid == visit_cost" in shown.output and "opt out" in shown.output
    preview = invoke(config, "notice", "preview", "overdue-fine", str(CATALOG["overdue-fine"].folder / "sample.csv"),
                     "--row", "3")
    assert preview.exit_code == 0
    assert "Subject: 【提示】您有一笔交通违法罚款逾期未缴纳" in preview.output and "3,000.00" in preview.output


def test_preview_of_row_1_says_it_is_the_header(sqlite_registry):
    from dropcli import civicmail

    sample = str(CATALOG["overdue-fine"].folder / "sample.csv")
    header = civicmail(sqlite_registry.config, "notice", "preview", "overdue-fine", sample, "--row", "1")
    assert header.returncode == 1 and "Traceback" not in header.stderr
    assert "row 1 of sample.csv is its header (the column names); the first row of data is row 2" in header.stderr
    zero = CliRunner().invoke(cli, ["-c", str(sqlite_registry.config.source), "notice", "preview", "overdue-fine",
                                    sample, "--row", "0"])
    assert zero.exit_code == 2 and "--row" in zero.output


def test_opt_out_of_an_optional_statement(sqlite_registry, sqlite_city):
    config = sqlite_registry.config
    address = sqlite_city["330108199202290485"]  # 赵雅婷, in the medical sample
    assert invoke(config, "notice", "opt-out", address, "medical-statement").exit_code == 0
    refused = CliRunner().invoke(cli, ["-c", str(config.source), "notice", "opt-out", address, "licence-renewal"])
    assert refused.exit_code != 0 and "mandatory" in str(refused.exception)
    run = invoke(config, "drop", "run", str(CATALOG["medical-statement"].folder / "sample.csv"), "--agency",
                 "social-security", "--notice-type", "medical-statement")
    assert "opted-out  1" in run.output and "delivered  2" in run.output
    invoke(config, "notice", "opt-in", address, "medical-statement")
    assert invoke(config, "drop", "retry", "1").exit_code == 0  # opted-out rows are not retried
    assert count_notices(sqlite_registry.store) == 2


def test_retry_after_the_citizen_registers(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    newcomer = idnumber.make("330102", dt.date(1990, 1, 1), 3)
    drop = write_csv(tmp_path / "d.csv", ["id_number", "name", "licence_number", "due_date"],
                     [["330102196804120318", "陈建国", "L1", "2027-01-01"], [newcomer, "何晓东", "L2", "2027-01-01"]])
    run = invoke(config, "drop", "run", str(drop), "--agency", "traffic-police", "--notice-type",
                 "fitness-certificate")
    assert "unmatched  1" in run.output and "paper-mail export" in run.output
    add_citizen(sqlite_registry, "何晓东", newcomer, password="citizen-pw-1")
    with sqlite_registry.store.session() as s:  # the first run, long ago
        s.get(Drop, 1).finished_at = dt.datetime(2020, 1, 2, 3, 4, 5)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
    retry = invoke(config, "drop", "retry", "1")
    assert "delivered  1" in retry.output
    status = invoke(config, "drop", "status", "1")
    assert "delivered    2" in status.output and "unmatched" not in status.output
    # finished: when the retry settled the rows and rewrote the files, not the first run's time
    finished = re.search(r"^finished\s+(\S+ \S+)$", status.output, re.M).group(1)
    assert before <= dt.datetime.strptime(finished, "%Y-%m-%d %H:%M:%S") <= before + dt.timedelta(minutes=1)
    assert count_notices(sqlite_registry.store) == 2
    # The run's files follow: no letter is owed any more, and the report says delivered, the
    # original columns kept.
    out = config.data_path("drops") / "1"
    with open(out / "paper.csv", encoding="utf-8-sig", newline="") as fh:
        assert list(csv.reader(fh)) == [["row", "name", "id_number", "subject", "text"]]
    with open(out / "report.csv", encoding="utf-8-sig", newline="") as fh:
        assert [(r["row"], r["name"], r["licence_number"], r["drop_status"]) for r in csv.DictReader(fh)] == [
            ("2", "陈建国", "L1", "delivered"), ("3", "何晓东", "L2", "delivered")]


def test_retry_rewrites_the_paper_export_of_a_run_reported_elsewhere(sqlite_registry, sqlite_city, tmp_path):
    """`drop run --report X` leaves no report.csv beside the drop, but its paper.csv is there:
    the retry rewrites it all the same, so no letter is printed for a row it delivered."""
    config = sqlite_registry.config
    newcomer = idnumber.make("330102", dt.date(1991, 2, 3), 5)
    drop = write_csv(tmp_path / "d.csv", ["id_number", "name", "licence_number", "due_date"],
                     [[newcomer, "何晓东", "L2", "2027-01-01"]])
    elsewhere = tmp_path / "elsewhere.csv"
    run = invoke(config, "drop", "run", str(drop), "--agency", "traffic-police", "--notice-type",
                 "fitness-certificate", "--report", str(elsewhere))
    assert "unmatched  1" in run.output
    paper = config.data_path("drops") / "1" / "paper.csv"
    with open(paper, encoding="utf-8-sig", newline="") as fh:
        assert [r[2] for r in csv.reader(fh)] == ["id_number", newcomer]
    add_citizen(sqlite_registry, "何晓东", newcomer, password="citizen-pw-1")
    assert "delivered  1" in invoke(config, "drop", "retry", "1").output
    with open(paper, encoding="utf-8-sig", newline="") as fh:
        assert list(csv.reader(fh)) == [["row", "name", "id_number", "subject", "text"]]
    assert not (config.data_path("drops") / "1" / "report.csv").exists()


def test_a_session_with_inbox_selected_sees_the_notice(sqlite_registry, sqlite_city):
    from delivery.runner import run_drop

    address = sqlite_city["330102196804120318"]
    set_password(sqlite_registry, address, "imap-password-1")
    with imap_server(sqlite_registry.config) as port:
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        try:
            c.login(address, "imap-password-1")
            assert c.select("INBOX") == ("OK", [b"0"])
            run_drop(sqlite_registry, CATALOG["licence-renewal"].folder / "sample.csv", "traffic-police",
                     "licence-renewal")
            typ, data = c.noop()
            assert typ == "OK"
            assert b"1" in (c.untagged_responses.get("EXISTS") or [b""])
            typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and b"=?utf-8?b?" in data[0][1]
        finally:
            c.logout()

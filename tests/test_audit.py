"""The audit trail of personal data: every command that shows or writes it out leaves a row (who:
the OS user and a --reason; what; when) before the data leaves; `audit list` reads them back; no
row holds an ID number in clear; the database refuses to change or remove a row."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mailserver.cli import cli
from mailserver.config import REPO_ROOT
from mailserver.identity import idnumber
from mailserver.registry import audit
from mailserver.registry.citizens import add_citizen
from mailserver.store.models import AuditLog

NUMBER = idnumber.make("330106", dt.date(1984, 5, 6), 17)


def civicmail(config, *args: str, user: str) -> subprocess.CompletedProcess:
    """The real CLI, run as OS user ``user`` as getpass sees it (LOGNAME comes first)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LOGNAME": user, "USER": user}
    return subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "civicmail"), "-c", str(config.source), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def audit_rows(store) -> list[dict]:
    with store.reader() as s:
        return [dict(r._mapping) for r in s.execute(text("SELECT * FROM audit_log ORDER BY id"))]


def test_citizen_show_is_audited_with_the_os_user_and_reason(sqlite_registry):
    reg = sqlite_registry
    address = add_citizen(reg, "刘洋", NUMBER, password="long enough pw").address
    shown = civicmail(reg.config, "citizen", "show", NUMBER, "--reason", f"case 2026-17, caller gave {NUMBER}",
                      user="clerk-wang")
    assert shown.returncode == 0, shown.stderr
    assert address in shown.stdout and idnumber.mask(NUMBER) in shown.stdout
    [row] = [r for r in audit_rows(reg.store) if r["action"] == "citizen show"]
    assert row["os_user"] == "clerk-wang" and row["actor"] == "operator"
    assert row["detail"] == f"{address} (found by ID number)"
    assert row["reason"].startswith("case 2026-17, caller gave ") and idnumber.NUMBER_HIDDEN in row["reason"]
    # no row holds the number, nor its digits grouped another way
    everything = json.dumps(audit_rows(reg.store), default=str, ensure_ascii=False)
    assert NUMBER not in everything and NUMBER[:17] not in everything.replace(" ", "").replace("-", "")

    listed = civicmail(reg.config, "audit", "list", "--json", user="inspector")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["action"] == "citizen show"]
    assert entry["os_user"] == "clerk-wang" and entry["reason"] == row["reason"] and entry["at"].endswith("Z")
    at = dt.datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
    assert abs(dt.datetime.now(dt.timezone.utc) - at) < dt.timedelta(minutes=5)


def test_every_revealing_command_leaves_a_row(sqlite_registry, tmp_path):
    """citizen show, drop run (a paper-mail export), drop report, keys rotate, application list and
    a survey's named ballots: one row each, in the order they ran, and `audit list` shows them."""
    from mailserver.services import surveys
    from tests.delivery.drophelpers import make_city, write_csv

    reg = sqlite_registry
    config = reg.config
    people = make_city(reg)
    base = ["-c", str(config.source)]

    def ok(*args: str) -> str:
        result = CliRunner().invoke(cli, base + list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    stranger = idnumber.make("330102", dt.date(1990, 1, 1), 3)  # nobody's mailbox: a paper letter
    drop = write_csv(tmp_path / "d.csv", ["id_number", "name", "licence_number", "due_date"],
                     [[stranger, "何晓东", "L2", "2027-01-01"]])
    ok("drop", "run", str(drop), "--agency", "traffic-police", "--notice-type", "fitness-certificate",
       "--reason", "monthly run")
    ok("drop", "report", "1", "-o", str(tmp_path / "r.csv"), "--reason", "agency asked")
    ok("keys", "rotate", "--reason", "yearly rotation")
    ok("application", "setup", "traffic-police")
    ok("application", "list", "--agency", "traffic-police", "--reason", "clerk on leave")
    surveys.add_survey(reg, {"id": "named", "title": "t", "kind": "survey", "anonymous": False,
                             "address": "survey-named", "questions": [surveys.Question("q", [("A", "a")])]})
    assert ok("survey", "tally", "named", "--ballots").splitlines() == ["address\tanswers"]
    shown = [(r["action"], r["detail"], r["reason"]) for r in audit_rows(reg.store)
             if r["action"] in ("drop run", "drop report", "keys.rotate", "application list", "survey tally --ballots")]
    paper = config.data_path("drops") / "1" / "paper.csv"
    assert shown == [("drop run", f"drop 1: paper-mail export {paper}", "monthly run"),
                     ("drop report", f"drop 1 to {tmp_path / 'r.csv'}", "agency asked"),
                     ("keys.rotate", f"version 2; re-encrypted {len(people)} citizen ID numbers, 1 sealed drop rows",
                      "yearly rotation"),
                     ("application list", "0 applications to traffic-police", "clerk on leave"),
                     ("survey tally --ballots", "survey named: 0 named ballots", None)]
    assert all(r["os_user"] for r in audit_rows(reg.store))  # every row, the registry's own too

    table = ok("audit", "list").splitlines()
    assert table[0].split() == ["at", "(UTC)", "os", "user", "actor", "action", "what", "reason"]
    assert any("application list" in line and "clerk on leave" in line for line in table)
    assert "monthly run" not in ok("audit", "list", "--limit", "2")  # only the latest two
    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert json.loads(ok("audit", "list", "--json", "--since", tomorrow)) == []


def test_audit_list_since_a_date(sqlite_registry):
    with sqlite_registry.store.session() as s:
        s.add(AuditLog(at=dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.timezone.utc), actor="operator",
                       action="citizen show", detail="old@hz.example.cn"))
        audit.record(s, "citizen show", "new@hz.example.cn")
    result = CliRunner().invoke(cli, ["-c", str(sqlite_registry.config.source), "audit", "list", "--json",
                                      "--since", "2026-01-01"], catch_exceptions=False)
    assert [e["detail"] for e in json.loads(result.output)] == ["new@hz.example.cn"]


def test_the_audit_log_is_append_only(registry, store):
    """UPDATE and DELETE on audit_log fail on both engines (TRUNCATE too on PostgreSQL), and the
    row stays as it was written."""
    with store.session() as s:
        audit.record(s, "citizen show", "zhang.wei@hz.example.cn", reason="case 1")
    statements = ["UPDATE audit_log SET reason = 'nothing to see'", "DELETE FROM audit_log"]
    if store.dialect == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(text(statement))
    [row] = audit_rows(store)
    assert (row["detail"], row["reason"]) == ("zhang.wei@hz.example.cn", "case 1")


def test_queue_list_and_notice_preview_are_audited(sqlite_registry):
    """Who wrote to whom (the outbound queue) and whose mailbox a row of an agency's file matches
    (a preview looks the row up in the registry) are personal data too."""
    from mailserver.store.models import OutboundMessage
    from tests.delivery.drophelpers import make_city

    reg = sqlite_registry
    make_city(reg)
    with reg.store.session() as s:
        s.add(OutboundMessage(sender="li.qiang@hz.example.cn", recipients="friend@elsewhere.example",
                              raw=b"Subject: x\r\n\r\nx\r\n"))
    listed = civicmail(reg.config, "queue", "list", "--reason", "relay down, ticket 9", user="clerk-zhou")
    assert listed.returncode == 0 and "friend@elsewhere.example" in listed.stdout, listed.stderr
    sample = REPO_ROOT / "templates" / "licence-renewal" / "sample.csv"
    shown = civicmail(reg.config, "notice", "preview", "licence-renewal", str(sample), "--row", "2",
                      "--reason", "checking the template", user="clerk-zhou")
    assert shown.returncode == 0 and "Subject:" in shown.stdout, shown.stderr
    rows = [(r["action"], r["detail"], r["reason"], r["os_user"]) for r in audit_rows(reg.store)
            if r["action"] in ("queue list", "notice preview")]
    assert rows == [("queue list", "1 outbound entries: senders and recipients", "relay down, ticket 9", "clerk-zhou"),
                    ("notice preview", f"licence-renewal: row 2 of {sample}", "checking the template", "clerk-zhou")]

"""The operator commands: topic, bulletin, survey, application (click's runner, a real store)."""
from __future__ import annotations

from click.testing import CliRunner

from mailserver.cli import cli
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency
from mailserver.store import open_store

from .conftest import DOMAIN, make_citizens

SURVEY = """id = "parks"
title = "公园开放时间"
[[questions]]
text = "延长开放时间？"
choices = ["是", "否"]
"""


def test_service_commands(sqlite_config, tmp_path):
    store = open_store(sqlite_config)
    try:
        reg = Registry(sqlite_config, store)
        make_citizens(reg, 3)
        add_agency(reg, "traffic-police", "交警支队", [f"traffic-police@{DOMAIN}"])
    finally:
        store.dispose()
    run = CliRunner()
    base = ["-c", str(sqlite_config.source)]

    def ok(*args: str) -> str:
        result = run.invoke(cli, base + list(args))
        assert result.exit_code == 0, result.output
        return result.output

    def fails(*args: str) -> str:
        """The user error a command raised (main() prints it as `civicmail: ...`, exit 1)."""
        result = run.invoke(cli, base + list(args))
        assert result.exit_code == 1 and result.exception is not None, result.output
        return str(result.exception)

    assert f"policy+subscribe@{DOMAIN}" in ok("topic", "add", "policy", "--name", "政策法规")
    assert "policy" in ok("topic", "list")
    assert "mandatory" in fails("topic", "add", "fines", "--name", "罚款", "--notice-type", "overdue-fine")
    assert "pension" in ok("topic", "add", "pension", "--name", "养老对账", "--notice-type", "pension-statement")
    assert f"unsubscribe@{DOMAIN}" in ok("topic", "statements")
    md = tmp_path / "b.md"
    md.write_text("# 通知\n\n正文。\n", encoding="utf-8")
    assert "delivered to 0 subscribers" in ok("bulletin", "publish", "policy", str(md))
    assert "pipeline" in fails("bulletin", "publish", "pension", str(md))

    toml = tmp_path / "s.toml"
    toml.write_text(SURVEY, encoding="utf-8")
    assert f"survey-parks@{DOMAIN}" in ok("survey", "add", str(toml))
    assert "mailed to 3 citizens" in ok("survey", "send", "parks", "--to", "all")
    assert "mailed to 0 citizens" in ok("survey", "send", "parks")
    assert "mailed to 0 citizens" in ok("survey", "send", "parks", "--to", "policy")  # no subscribers
    assert "no topic" in fails("survey", "send", "parks", "--to", "nosuch")
    assert ok("survey", "tally", "parks", "--csv").splitlines()[1:] == ["1,延长开放时间？,A,是,0", "1,延长开放时间？,B,否,0"]
    table = ok("survey", "tally", "parks").splitlines()
    assert "0 ballots" in table[0]
    # every column is named, and the rule under the names is as wide as the table
    assert table[1].split() == ["#", "question", "choice", "choice", "text", "votes"]
    assert table[2].split() == ["-", "-" * 14, "-" * 6, "-" * 11, "-" * 5]
    assert "anonymous" in fails("survey", "tally", "parks", "--ballots")
    ok("survey", "close", "parks")
    assert "closed" in fails("survey", "send", "parks")

    assert f"traffic-police-apply@{DOMAIN}" in ok("application", "setup", "traffic-police")
    assert "no application" in fails("application", "reply", "2026-000001", "--status", "ok", str(md))
    assert "number" in ok("application", "list")

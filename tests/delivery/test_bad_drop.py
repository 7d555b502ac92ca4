"""A drop full of mistakes delivers exactly the good rows and reports every bad one by row number."""
from __future__ import annotations

import csv
import datetime as dt
import os
import stat

import pytest

from delivery.read import FileError
from delivery.runner import run_drop
from drophelpers import write_csv
from mailcheck import count_notices
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen, disable_account

HEADER = ["Reference", "ID Number", "Name", "visit-date", "Hospital", "visit_cost", "insurance paid", "SELF_PAID",
          "account_balance"]


def number(i: int) -> str:
    return idnumber.make("330110", dt.date(1980, 1, 1) + dt.timedelta(days=i), 500 + i)


def wrong_checksum(n: str) -> str:
    last = "0" if n[-1] != "0" else "1"
    return n[:-1] + last


@pytest.fixture
def people(registry):
    names = ["周杰", "吴敏", "郑洁", "孙浩", "冯雪", "钱坤"]
    for i, name in enumerate(names):
        add_citizen(registry, name, number(i), password="citizen-pw-1")
    from drophelpers import make_city

    make_city(registry)
    return names


def read_report(path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return {int(r["row"]): r for r in csv.DictReader(fh)}


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8-sig"])
def test_bad_rows_are_reported_and_good_rows_delivered(registry, people, tmp_path, encoding):
    disable_account(registry, f"feng.xue@{registry.domain}")
    rows = [
        ["R1", number(0), "周杰", "2026-11-01", "示例市第一人民医院", "100.00", "80.00", "20.00", "500"],       # 2 good
        ["R2", wrong_checksum(number(1)), "吴敏", "2026-11-01", "医院", "10", "5", "5", "1"],                  # 3 checksum
        ["R3", number(2), "郑洁", "", "医院", "10", "5", "5", "1"],                                             # 4 missing date
        ["R4", number(2), "郑洁", "2026-02-30", "医院", "10", "5", "5", "1"],                                   # 5 bad date
        ["R5", number(3), "孙浩", "2026年11月2日", "医院", "-10.00", "5", "5", "1"],                            # 6 negative
        ["R6", number(1), "吴敏敏", "2026/11/03", "医院", "10", "5", "5", "1"],                                 # 7 name differs
        ["R7", number(40), "无名", "2026-11-03", "医院", "10", "5", "5", "1"],                                  # 8 unknown
        ["R1", number(0), "周杰", "2026-11-01", "示例市第一人民医院", "100.00", "80.00", "20.00", "500"],       # 9 duplicate
        ["R8", number(2), "郑洁", "2026/11/04", "中医院", "¥1,234.50", "1,000", "234.50", "9,999.99"],          # 10 good
        ["R9", number(3), "孙浩", "2026-11-05", "医院", "100", "80", "30", "1"],                                # 11 sum wrong
        ["R10", number(4), "冯雪", "2026-11-05", "医院", "100", "80", "20", "1"],                               # 12 disabled
        ["R11", number(5), "钱坤", "2026-11-05", "医院", "12.345", "5", "5", "1"],                              # 13 3 decimals
    ]
    path = write_csv(tmp_path / "drop.csv", HEADER, rows, encoding=encoding)
    if encoding == "gb18030":
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")
    result = run_drop(registry, path, "social-security", "medical-statement")
    assert result.summary.counts == {"delivered": 2, "invalid": 6, "held": 1, "unmatched": 2, "duplicate": 1}
    assert count_notices(registry.store) == 2
    report = read_report(result.report_path)
    assert sorted(report) == list(range(2, 14))
    expect = {
        2: ("delivered", ""), 3: ("invalid", "checksum"), 4: ("invalid", "visit_date: 必填项为空"),
        5: ("invalid", "not a real date"), 6: ("invalid", "visit_cost: 不得小于 0"), 7: ("held", "name differs"),
        8: ("unmatched", "no mailbox"), 9: ("duplicate", "already delivered"), 10: ("delivered", ""),
        11: ("invalid", "insurance_paid + self_paid must equal visit_cost"), 12: ("unmatched", "disabled"),
        13: ("invalid", "at most two decimals"),
    }
    for line, (status, why) in expect.items():
        assert report[line]["drop_status"] == status, (line, report[line])
        assert why in report[line]["drop_reason"], (line, report[line]["drop_reason"])
    # Original columns as the agency wrote them, and the ID number never in a reason.
    assert report[3]["ID Number"] == wrong_checksum(number(1))
    assert all(number(i) not in r["drop_reason"] for r in report.values() for i in range(6))
    # The paper-mail export: the unknown and the disabled citizen, with their rendered letter, 0600.
    assert stat.S_IMODE(os.stat(result.paper_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(result.report_path).st_mode) == 0o600
    with open(result.paper_path, encoding="utf-8-sig", newline="") as fh:
        paper = list(csv.DictReader(fh))
    assert [(p["row"], p["name"], p["id_number"]) for p in paper] == [("8", "无名", number(40)), ("12", "冯雪", number(4))]
    assert "医疗消费个人对账信息" in paper[0]["text"] and "无名" in paper[0]["text"]


def test_file_level_errors_deliver_nothing(registry, city, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FileError, match="empty"):
        run_drop(registry, empty, "traffic-police", "licence-renewal")
    header_only = write_csv(tmp_path / "h.csv", ["id_number", "name", "licence_number", "expiry_date", "office"], [])
    with pytest.raises(FileError, match="no rows"):
        run_drop(registry, header_only, "traffic-police", "licence-renewal")
    missing = write_csv(tmp_path / "m.csv", ["id_number", "name", "office"], [["x", "y", "z"]])
    with pytest.raises(FileError, match="licence_number, expiry_date"):
        run_drop(registry, missing, "traffic-police", "licence-renewal")
    with pytest.raises(FileError, match="unknown notice type"):
        run_drop(registry, missing, "traffic-police", "no-such-type")
    assert count_notices(registry.store) == 0


def test_agency_needs_the_grant(registry, city):
    from mailserver.errors import NotFound
    from drophelpers import CATALOG

    with pytest.raises(NotFound, match="not granted"):
        run_drop(registry, CATALOG["pension-statement"].folder / "sample.csv", "traffic-police", "pension-statement")


def test_a_template_fault_fails_only_its_row(tmp_path):
    """StrictUndefined: a field the template needs but the row lacks fails that row (with the
    stage and reason), never renders blank; the other rows are delivered."""
    import shutil

    from drophelpers import CATALOG, TEMPLATES, make_city
    from mailserver.provision import prepare
    from mailserver.registry import Registry
    from mailserver.store import open_store
    from tests.conftest import make_config

    data = tmp_path / "data"
    shutil.copytree(TEMPLATES, data / "templates")
    subject = data / "templates" / "owner-contact-change" / "subject"
    subject.write_text("{{ new_address.strip() }} " + subject.read_text(encoding="utf-8"), encoding="utf-8")
    config = make_config(data, 'delivery.templates_dir="templates"')
    prepare(config)
    store = open_store(config)
    try:
        reg = Registry(config, store)
        make_city(reg)
        result = run_drop(reg, CATALOG["owner-contact-change"].folder / "sample.csv", "traffic-police",
                          "owner-contact-change")
        assert result.summary.counts == {"delivered": 1, "failed": 1}
        report = read_report(result.report_path)
        assert report[3]["drop_status"] == "failed" and "template could not render" in report[3]["drop_reason"]
        assert count_notices(store) == 1
    finally:
        store.dispose()

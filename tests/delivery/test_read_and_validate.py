"""Stage units: reading CSV / JSON Lines / XLSX, column matching, field types, cross-field checks."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from delivery import read
from delivery.read import FileError
from delivery.runner import run_drop
from delivery.validate import column_mapping, parse_date, parse_money, validate_row
from drophelpers import CATALOG, write_csv
from mailserver.errors import ValidationError

MED = CATALOG["medical-statement"]


@pytest.mark.parametrize("text", ["2026-03-05", "2026/3/5", "2026年03月05日", "2026年3月5日"])
def test_three_date_spellings(text):
    assert parse_date(text) == dt.date(2026, 3, 5)


@pytest.mark.parametrize("text", ["2026-13-01", "05/03/2026", "2026.03.05", "昨天"])
def test_bad_dates(text):
    with pytest.raises(ValidationError):
        parse_date(text)


@pytest.mark.parametrize("text,value", [("1,234.50", "1234.50"), ("¥1234.5", "1234.50"), ("0", "0.00"),
                                        ("￥12", "12.00"), ("-3.10", "-3.10")])
def test_money_is_decimal(text, value):
    parsed = parse_money(text)
    assert isinstance(parsed, Decimal) and parsed == Decimal(value) and str(parsed) == value


@pytest.mark.parametrize("text", ["1.234", "12,34", "1e3", "abc", "1,2345.00"])
def test_bad_money(text):
    with pytest.raises(ValidationError):
        parse_money(text)


def test_columns_match_ignoring_case_spaces_dashes_underscores():
    columns = ["ID Number", "NAME", "visit-date", "hospital", "Visit_Cost", "insurance paid", "self-paid",
               "Account Balance", "extra note"]
    mapping = column_mapping(MED, columns)
    assert mapping["id_number"] == "ID Number" and mapping["account_balance"] == "Account Balance"
    with pytest.raises(FileError, match="self_paid, account_balance"):
        column_mapping(MED, columns[:6])


def test_cross_field_check_and_ranges():
    mapping = {f.name: f.name for f in MED.all_fields}
    row = {"id_number": "330102196804120318", "name": "陈建国", "visit_date": "2026-11-01", "hospital": "医院",
           "visit_cost": "100.00", "insurance_paid": "70", "self_paid": "20", "account_balance": "5"}
    values, errors = validate_row(MED, mapping, row)
    assert [e.column for e in errors] == ["visit_cost"] and "insurance_paid + self_paid" in errors[0].reason
    values, errors = validate_row(MED, mapping, dict(row, self_paid="30"))
    assert errors == [] and values["visit_cost"] == Decimal("100.00") and values["visit_date"] == dt.date(2026, 11, 1)
    points = CATALOG["violation-points"]
    pmap = {f.name: f.name for f in points.all_fields}
    _, errors = validate_row(points, pmap, {"id_number": "330102196804120318", "name": "x", "licence_number": "1",
                                            "points": "13", "as_of": "2026-01-01"})
    assert [e.column for e in errors] == ["points"] and "at most 12" in errors[0].reason
    pension = CATALOG["pension-statement"]
    _, errors = validate_row(pension, {f.name: f.name for f in pension.all_fields},
                             {"id_number": "330102196804120318", "name": "x", "period": "2026-13",
                              "contribution": "1", "balance": "1", "months_contributed": "1.5"})
    assert sorted(e.column for e in errors) == ["months_contributed", "period"]


def test_utf8_bom_and_gb18030_are_detected(tmp_path):
    header = ["id_number", "name"]
    for encoding, expect in (("utf-8-sig", "utf-8-sig"), ("utf-8", "utf-8-sig"), ("gb18030", "gb18030")):
        path = write_csv(tmp_path / f"{encoding}.csv", header, [["330102196804120318", "陈建国"]], encoding)
        drop = read.open_drop(path)
        assert drop.encoding == expect and drop.columns == header
        assert list(read.rows(drop)) == [(2, {"id_number": "330102196804120318", "name": "陈建国"})]


def test_row_numbers_are_spreadsheet_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id_number,name\r\n1,"two\r\nlines"\r\n\r\n3,x\r\n', encoding="utf-8")
    assert [line for line, _ in read.rows(read.open_drop(path))] == [2, 4]


def test_json_lines(registry, city, tmp_path):
    path = tmp_path / "drop.jsonl"
    rows = [{"id_number": "330106198511270157", "name": "王志强", "licence_number": "L1", "points": 4,
             "as_of": "2026-11-30"},
            "not an object",
            {"id_number": "330106198511270157", "name": "王志强", "licence_number": "L1", "points": 5,
             "as_of": "2026-12-31"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    result = run_drop(registry, path, "traffic-police", "violation-points")
    assert result.summary.counts == {"delivered": 2, "invalid": 1}


def test_xlsx(registry, city, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Reference", "ID Number", "Name", "Decision Number", "Amount", "Due Date", "Late Fee"])
    sheet.append(["X-1", "330109197507080777", "欧阳明辉", "D-1", 200.5, dt.datetime(2026, 10, 31), 0])
    sheet.append(["X-2", "330109197507080777", "欧阳明辉", "D-2", -5, dt.datetime(2026, 10, 31), 0])
    path = tmp_path / "drop.xlsx"
    book.save(path)
    result = run_drop(registry, path, "traffic-police", "overdue-fine")
    assert result.summary.counts == {"delivered": 1, "invalid": 1}


def test_xlsx_id_number_in_a_number_cell_is_refused_not_truncated(registry, city, tmp_path):
    """Excel keeps 15 significant digits: an ID typed into a General cell is saved as a float
    whose last digits are gone. That row is invalid with a reason saying so; the others go on."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Reference", "ID Number", "Name", "Decision Number", "Amount", "Due Date", "Late Fee"])
    sheet.append(["X-1", "330109197507080777", "欧阳明辉", "D-1", 200.5, dt.datetime(2026, 10, 31), 0])
    sheet.append(["X-2", 3.30109197507081e17, "欧阳明辉", "D-2", 100, dt.datetime(2026, 10, 31), 0])
    path = tmp_path / "drop.xlsx"
    book.save(path)
    drop = read.open_drop(path)
    cells = [c for _, c in read.rows(drop)]
    assert cells[1]["ID Number"] == "3.30109197507081E+17"  # never "330109197507081000"
    result = run_drop(registry, path, "traffic-police", "overdue-fine")
    assert result.summary.counts == {"delivered": 1, "invalid": 1}
    ofine = CATALOG["overdue-fine"]
    mapping = column_mapping(ofine, drop.columns)
    _, errors = validate_row(ofine, mapping, cells[1])
    assert [e.column for e in errors] == ["id_number"] and "15 of its 18 digits" in errors[0].reason


def test_unknown_encoding_is_a_file_error(tmp_path):
    path = write_csv(tmp_path / "x.csv", ["id_number", "name"], [["1", "2"]])
    with pytest.raises(FileError, match="unknown encoding"):
        read.open_drop(path, "no-such-codec")

"""`citizen import`: bad rows reported by line, good rows registered, a rerun adds nothing."""
from __future__ import annotations

import csv
import datetime as dt
import io

from sqlalchemy import func, select

from mailserver.identity import idnumber
from mailserver.registry.bulk import import_citizens, import_file
from mailserver.registry.citizens import activate
from mailserver.registry.auth import authenticate
from mailserver.store.models import Account, Citizen, Folder


def n(i: int) -> str:
    return idnumber.make("330106", dt.date(1985, 1, 1) + dt.timedelta(days=i), i)


MIXED = "\n".join([
    "name,id_number,phone,address",        # line 1: header
    f"张伟,{n(1)},13800000001,",            # 2 ok
    f"王芳,{n(2)}1,13800000002,",           # 3 bad: 19 characters
    f"李娜,{n(3)[:17]}{'0' if n(3)[17] != '0' else '1'},13800000003,",  # 4 bad: checksum
    f",{n(4)},13800000004,",               # 5 bad: empty name
    f"刘洋,{n(5)},138-0000-0005,",          # 6 ok
    "",                                    # 7 blank: skipped, not counted
    f"张伟,{n(6)},phone?,",                 # 8 bad: phone
    f"陈静,{n(1)},13800000009,",            # 9 bad: same ID as line 2
    f"赵雷,{n(7)},13800000010,zhao.lei",    # 10 ok, explicit address
    f"钱多,{n(8)},13800000011,zhao.lei",    # 11 bad: address taken (by line 10)
    f"\"孙,悟空\",{n(9)},,",                # 12 ok (quoted comma in the name)
    f"周,{n(10)},1,2,3",                   # 13 bad: too many columns
]) + "\n"


def run(registry, text, batch_size=3):
    return import_citizens(registry, io.StringIO(text), None, batch_size=batch_size), None


def test_mixed_rows_exact_counts_and_line_numbers(registry, store):
    report, _ = run(registry, MIXED)
    assert report.rows == 11
    assert report.imported == 4
    assert report.already_registered == 0
    lines = [line for line, _ in report.errors]
    assert sorted(lines) == [3, 4, 5, 8, 9, 11, 13]
    reasons = dict(report.errors)
    assert "18 characters" in reasons[3] and "checksum" in reasons[4] and "name is empty" in reasons[5]
    assert "phone" in reasons[8] and "earlier row" in reasons[9] and "already taken" in reasons[11]
    assert "columns" in reasons[13]
    with store.reader() as s:
        assert s.scalar(select(func.count()).select_from(Citizen)) == 4
        addresses = set(s.scalars(select(Account.address)))
        assert s.scalar(select(func.count()).select_from(Folder)) == 4 * 6
    assert addresses == {"zhang.wei@hz.example.cn", "liu.yang@hz.example.cn", "zhao.lei@hz.example.cn",
                         "sun.wukong@hz.example.cn"}


def test_rerun_adds_nothing(registry, store):
    first, _ = run(registry, MIXED)
    second, _ = run(registry, MIXED)
    assert second.imported == 0
    assert second.already_registered == first.imported == 4
    # the rows that were bad stay bad, with the same line numbers and reasons
    assert second.errors == first.errors
    with store.reader() as s:
        assert s.scalar(select(func.count()).select_from(Citizen)) == 4


def test_codes_file_and_activation(registry, tmp_path):
    src = tmp_path / "citizens.csv"
    src.write_text(MIXED, encoding="utf-8-sig")  # with a BOM, as Excel writes UTF-8
    codes_path = tmp_path / "codes.csv"
    report = import_file(registry, src, codes_path)
    assert report.imported == 4
    rows = list(csv.DictReader(codes_path.open(encoding="utf-8")))
    assert [r["address"] for r in rows][:2] == ["zhang.wei@hz.example.cn", "liu.yang@hz.example.cn"]
    assert codes_path.stat().st_mode & 0o077 == 0
    first = rows[0]
    activate(registry, first["address"], first["activation_code"], "chosen password")
    assert authenticate(registry, first["address"], "chosen password").address == first["address"]
    # a rerun appends no codes
    import_file(registry, src, codes_path)
    assert len(list(csv.DictReader(codes_path.open(encoding="utf-8")))) == 4


def test_gb18030_file_is_detected(registry, tmp_path):
    src = tmp_path / "citizens-gb.csv"
    src.write_bytes(f"name,id_number,phone\n欧阳娜娜,{n(20)},13800000020\n张伟,{n(21)},\n".encode("gb18030"))
    report = import_file(registry, src, None)
    assert (report.imported, report.errors) == (2, [])
    with registry.store.reader() as s:
        names = set(s.scalars(select(Citizen.name)))
    assert names == {"欧阳娜娜", "张伟"}


def test_headerless_file_and_duplicate_names_across_batches(registry, store):
    text = "".join(f"张伟,{n(100 + i)},\n" for i in range(7))
    report, _ = run(registry, text, batch_size=2)
    assert report.imported == 7 and not report.errors
    with store.reader() as s:
        got = set(s.scalars(select(Account.address)))
    assert got == {"zhang.wei@hz.example.cn"} | {f"zhang.wei{i}@hz.example.cn" for i in range(2, 8)}


def workbook(path, rows, text_id=True):
    """An .xlsx as Excel saves it: the ID column formatted as Text (``text_id``) or left as
    numbers, as a clerk who typed the digits into a General cell leaves it."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if text_id:
        for (cell,) in sheet.iter_rows(min_col=2, max_col=2):
            cell.number_format = "@"
    book.create_sheet("notes").append(["ignored: only the first sheet is read"])
    book.save(path)
    return path


def test_xlsx_workbook_rows_and_line_numbers(registry, store, tmp_path):
    src = workbook(tmp_path / "citizens.xlsx", [
        ["Name", "ID Number", "Phone", "Address"],     # row 1: header, any case and spacing
        ["张伟", n(30), 13800000030, None],             # 2 ok; the phone is a number cell
        ["王芳", n(31)[:17] + ("0" if n(31)[17] != "0" else "1"), "13800000031", None],  # 3 bad checksum
        [None, None, None, None],                       # 4 blank: skipped
        ["李娜", n(32), None, "li.na.x"],               # 5 ok, explicit address
        ["刘洋", int(n(33)[:17] + "0") if n(33)[17] == "X" else int(n(33)), "13800000033", None],  # 6 number cell
    ])
    codes = tmp_path / "codes.csv"
    report = import_file(registry, src, codes)
    assert (report.rows, report.imported, report.already_registered) == (4, 2, 0)
    assert [line for line, _ in report.errors] == [3, 6]
    assert "15 of its 18 digits" in report.errors[1][1]
    with store.reader() as s:
        phones = dict(s.execute(select(Citizen.name, Citizen.phone)).all())
        addresses = set(s.scalars(select(Account.address)))
    assert phones == {"张伟": "13800000030", "李娜": None}
    assert "li.na.x@hz.example.cn" in addresses
    assert len(list(csv.DictReader(codes.open(encoding="utf-8")))) == 2
    # a rerun adds nothing and reports the same rows
    again = import_file(registry, src, None)
    assert (again.imported, again.already_registered, [ln for ln, _ in again.errors]) == (0, 2, [3, 6])


def test_xlsx_found_by_content_and_a_broken_workbook_is_a_clear_error(registry, tmp_path):
    import pytest

    from mailserver.errors import ValidationError

    src = workbook(tmp_path / "saved-without-extension", [["张伟", n(40), "13800000040"]])
    assert import_file(registry, src, None).imported == 1  # headerless, by magic number
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(ValidationError, match="broken.xlsx: not a readable XLSX workbook"):
        import_file(registry, broken, None)

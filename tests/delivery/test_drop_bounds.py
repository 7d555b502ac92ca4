"""Issue 11, items 14 and 15 (and 13's JSON recursion): what a drop file may not do to the reader,
through `civicmail drop run` as an operator runs it. A row that cannot be read is invalid with its
row number and the rows after it run; a workbook that would take minutes is refused before it is
read, with a clear message; and while the spool watcher refuses one, the server stays responsive."""
from __future__ import annotations

import json
import time
import zipfile

from dropcli import report, run_drop, sample_rows
from drophelpers import make_city
from mailcheck import count_notices
from tests.abuse import assert_responsive, city, city_factory  # noqa: F401  (fixtures)
from xlsxcraft import XXE_PROLOG, write_workbook

#: over the csv module's 128 Ki characters
HUGE = "长" * 200_000


def test_a_csv_cell_over_the_limit_makes_its_row_invalid_and_the_rest_run(sqlite_registry, sqlite_city, tmp_path):
    header, (a, b, c) = sample_rows()
    text = ",".join(header) + "\r\n" + ",".join(a) + "\r\n"
    text += ",".join(["JJ-1", "330102196804120318", "陈建国", "1", "2026-12-31", HUGE]) + "\r\n"   # row 3: unquoted
    text += ",".join(b) + "\r\n"                                                                     # row 4
    # row 5: a quoted cell over the limit across lines, holding commas, quotes and what looks like rows
    text += f'JJ-2,330102196804120318,陈建国,1,2026-12-31,"{HUGE}\r\n{",".join(c)}\r\n""{HUGE}"\r\n'
    text += ",".join(c) + "\r\n"                                                                     # row 6
    path = tmp_path / "big-cell.csv"
    path.write_text(text, encoding="utf-8")
    done = run_drop(sqlite_registry.config, path)
    assert done.returncode == 0, done.stderr
    assert "delivered  3" in done.stdout and "invalid    2" in done.stdout
    rows = report(sqlite_registry.config)
    assert sorted(rows) == [2, 3, 4, 5, 6]
    for line in (3, 5):
        assert rows[line]["drop_status"] == "invalid"
        assert "a cell is longer than 131072 characters" in rows[line]["drop_reason"]
    assert [rows[n]["reference"] for n in (2, 4, 6)] == [a[0], b[0], c[0]]
    assert count_notices(sqlite_registry.store) == 3


def test_a_line_over_max_line_chars_is_an_invalid_row(sqlite_registry, sqlite_city, tmp_path):
    header, (a, b, c) = sample_rows()
    many = ",".join(["x"] * 100_000)  # no cell is long: the line is
    lines = [header, a, ["JJ-3", "330102196804120318", "陈建国", "1", "2026-12-31", many], b, c]
    path = tmp_path / "long-line.csv"
    path.write_text("".join(",".join(r) + "\n" for r in lines), encoding="utf-8")
    done = run_drop(sqlite_registry.config, path, "--set", "delivery.max_line_chars=65536")
    assert done.returncode == 0, done.stderr
    rows = report(sqlite_registry.config)
    assert rows[3]["drop_status"] == "invalid" and "longer than 65536 characters" in rows[3]["drop_reason"]
    assert [rows[n]["drop_status"] for n in (2, 4, 5)] == ["delivered"] * 3


def test_a_json_line_nested_too_deep_is_an_invalid_row(sqlite_registry, sqlite_city, tmp_path):
    header, rows = sample_rows()
    objects = [json.dumps(dict(zip(header, r)), ensure_ascii=False) for r in rows]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([objects[0], "[" * 100_000, '{"reference": ' + "[" * 17 + "]" * 17 + "}",
                               *objects[1:]]) + "\n", encoding="utf-8")
    done = run_drop(sqlite_registry.config, path)
    assert done.returncode == 0, done.stderr
    report_rows = report(sqlite_registry.config)
    for line in (2, 3):
        assert report_rows[line]["drop_status"] == "invalid"
        assert "JSON nested deeper than 16 levels" in report_rows[line]["drop_reason"]
    assert [report_rows[n]["drop_status"] for n in (1, 4, 5)] == ["delivered"] * 3

    first = tmp_path / "deep-first.jsonl"  # the first line names the columns: the file is refused
    first.write_text("[" * 100_000 + "\n" + objects[0] + "\n", encoding="utf-8")
    refused = run_drop(sqlite_registry.config, first)
    assert refused.returncode == 1 and "line 1: JSON 嵌套超过 16 层" in refused.stderr
    assert "Traceback" not in refused.stderr


def _workbook(tmp_path, name: str, **kwargs):
    header, rows = sample_rows()
    return write_workbook(tmp_path / name, header, rows, **kwargs)


def test_a_workbook_is_refused_before_it_is_read(sqlite_registry, sqlite_city, tmp_path):
    config = sqlite_registry.config
    # the workbook: a few dozen KB declaring a million shared strings (17 MB unzipped)
    strings = _workbook(tmp_path, "strings.xlsx", extra_strings=1_000_000)
    assert strings.stat().st_size < 100_000
    done = run_drop(config, strings)
    assert done.returncode == 1 and "more than 1,000,000 shared strings" in done.stderr, done.stderr
    assert "delivery.xlsx_max_shared_strings" in done.stderr

    unzipped = _workbook(tmp_path, "unzipped.xlsx")
    done = run_drop(config, unzipped, "--set", "delivery.xlsx_max_unzipped_bytes=2000")
    assert done.returncode == 1 and "more than the limit of 2,000" in done.stderr, done.stderr

    xxe = _workbook(tmp_path, "xxe.xlsx", sheet_prolog=XXE_PROLOG, cell_xml={(2, 2): "&x;"})
    done = run_drop(config, xxe)
    assert done.returncode == 1 and "declares a DTD" in done.stderr and "Traceback" not in done.stderr

    utf16 = tmp_path / "utf16.xlsx"  # a DTD in UTF-16 hides from a byte search: such parts are refused
    write_workbook(utf16, *sample_rows())
    with zipfile.ZipFile(utf16, "a") as z:
        z.writestr("xl/extra.xml", '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><a/>'
                   .encode("utf-16"))
    done = run_drop(config, utf16)
    assert done.returncode == 1 and "not in UTF-8" in done.stderr
    assert count_notices(sqlite_registry.store) == 0

    good = _workbook(tmp_path, "good.xlsx", extra_strings=10)  # the same workbook within the bounds runs
    done = run_drop(config, good)
    assert done.returncode == 0 and "delivered  3" in done.stdout, done.stdout + done.stderr


def test_the_spool_refuses_a_workbook_bomb_while_the_server_stays_responsive(city, tmp_path):  # noqa: F811
    make_city(city.server.registry)
    config = city.server.config
    folder = config.data_path(config.delivery.spool_dir) / "traffic-police" / "licence-renewal"
    folder.mkdir(parents=True)
    watcher = next(s for s in city.server.services if getattr(s, "name", None) == "spool")
    watcher.interval = 0.1
    _workbook(tmp_path, "bomb.xlsx", extra_strings=3_000_000).rename(folder / "bomb.xlsx")
    assert_responsive(city)
    deadline = time.monotonic() + 30
    while not (folder / "failed" / "bomb.xlsx.error.txt").exists():
        assert time.monotonic() < deadline, "the workbook was not refused"
        time.sleep(0.05)
    assert "shared strings" in (folder / "failed" / "bomb.xlsx.error.txt").read_text(encoding="utf-8")

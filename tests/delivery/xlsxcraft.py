"""Workbooks written part by part (openpyxl writes only well-behaved ones): a header row of shared
strings, data rows of inline strings, and what an attacker may add: a prolog (a DTD) before the
sheet, any number of shared strings, parts in another encoding."""
from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
CONTENT_TYPES = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"""
ROOT_RELS = f"""<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"""
WORKBOOK = f"""<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"""
WORKBOOK_RELS = f"""<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"""
#: a DTD whose entity reads a local file (XXE): openpyxl's parser stops at it (ParseError)
XXE_PROLOG = '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE worksheet [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def _column(i: int) -> str:
    return chr(ord("A") + i)


def write_workbook(path: Path, header: list[str], rows: list[list[str]], *, sheet_prolog: str = "",
                   cell_xml: dict[tuple[int, int], str] | None = None, extra_strings: int = 0) -> Path:
    """``header`` as shared strings (followed by ``extra_strings`` unused ones), ``rows`` as inline
    strings; ``cell_xml`` puts raw XML into the text of a cell (row index, column index)."""
    cell_xml = cell_xml or {}
    head = "".join(f'<c r="{_column(j)}1" t="s"><v>{j}</v></c>' for j in range(len(header)))
    body = []
    for i, row in enumerate(rows, start=2):
        cells = "".join(f'<c r="{_column(j)}{i}" t="inlineStr"><is><t>{cell_xml.get((i, j), escape(v))}</t></is></c>'
                        for j, v in enumerate(row))
        body.append(f'<row r="{i}">{cells}</row>')
    sheet = f'{sheet_prolog}<worksheet xmlns="{MAIN}"><sheetData><row r="1">{head}</row>{"".join(body)}</sheetData></worksheet>'
    strings = "".join(f"<si><t>{escape(h)}</t></si>" for h in header) + "<si><t>x</t></si>" * extra_strings
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", ROOT_RELS)
        z.writestr("xl/workbook.xml", WORKBOOK)
        z.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        z.writestr("xl/worksheets/sheet1.xml", sheet.encode("utf-8"))
        z.writestr("xl/sharedStrings.xml", f'<sst xmlns="{MAIN}">{strings}</sst>'.encode("utf-8"))
    return path

"""Stage `read`: a drop file as a stream of (row number, {column: text}), never all at once.

CSV in UTF-8 (with or without BOM) or GB18030 (what Excel writes in China; detected when the
start of the file is not UTF-8, or named with ``encoding``), JSON Lines, XLSX (openpyxl,
read-only). Row numbers are the ones the agency's spreadsheet shows: the header is row 1.

Every bound is per row where it can be: a line longer than ``delivery.max_line_chars``, a CSV cell
over the csv module's limit, a JSON line nested deeper than ``delivery.max_json_depth`` make that
row invalid (an ``\0error`` cell) and reading goes on with the next row; only the header row
fails the file. A workbook is checked as a whole before openpyxl reads it (``check_workbook``).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import weakref
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mailserver.cells import cell_text
from mailserver.config import DeliveryConfig
from mailserver.errors import ValidationError

from . import reasons

FORMATS = ("csv", "jsonl", "xlsx")
SNIFF_BYTES = 1 << 16
#: the csv module's limit on one cell, in characters (its default, 128 Ki; never changed here:
#: csv.field_size_limit is process-wide)
CSV_MAX_CELL = csv.field_size_limit()
#: the key of a row's cells that says why the row could not be read (validate makes it invalid)
ROW_ERROR = "\0error"


class FileError(ValidationError):
    """The drop as a whole cannot be run (unreadable, empty, columns missing, already run)."""


class AlreadyRun(FileError):
    """The same file was run before for this agency and notice type (``--force`` runs it again)."""


@dataclass
class DropFile:
    path: Path
    format: str
    encoding: str | None
    #: column names as the agency wrote them
    columns: list[str] = field(default_factory=list)
    #: the reading bounds (delivery.max_line_chars, max_json_depth, xlsx_max_*)
    limits: DeliveryConfig = field(default_factory=DeliveryConfig)
    #: an XLSX workbook, loaded once by open_drop for the header and the rows
    book: Any = field(default=None, repr=False)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "xlsx":
        return "xlsx"
    return "csv"


def detect_encoding(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    try:
        head.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        return "utf-8-sig" if exc.start >= len(head) - 3 and len(head) == SNIFF_BYTES else "gb18030"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_drop(path: Path, encoding: str | None = None, limits: DeliveryConfig | None = None) -> DropFile:
    """Look at the file: its format, encoding and header. FileError if it cannot be read."""
    if not path.is_file():
        raise FileError(f"{path}: no such file")
    fmt = detect_format(path)
    enc = None
    if fmt != "xlsx":
        enc = encoding or detect_encoding(path)
        try:
            "".encode(enc)
        except LookupError:
            raise FileError(f"unknown encoding {enc!r}") from None
    drop = DropFile(path, fmt, enc, limits=limits or DeliveryConfig())
    if fmt == "xlsx":
        _load_workbook(drop)
    for columns in _header(drop):
        drop.columns = columns
        break
    else:
        raise FileError(reasons.EMPTY_FILE)
    return drop


def _header(drop: DropFile) -> Iterator[list[str]]:
    for _, row in _records(drop, header=True):
        yield [str(c).strip() for c in row]
        return


def rows(drop: DropFile) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {column as written: cell text}) for every non-blank data row."""
    columns = drop.columns
    n = len(columns)
    for line, record in _records(drop, header=False):
        if isinstance(record, dict):
            yield line, record
            continue
        # each cell's text once (a CSV's cells are str already: stripped in C)
        texts = list(map(str.strip, record)) if drop.format == "csv" else [str(c).strip() for c in record]
        if not any(texts):
            continue
        if len(texts) < n:
            texts += [""] * (n - len(texts))
        cells = dict(zip(columns, texts))
        if len(texts) > n and any(texts[n:]):
            cells["\0extra"] = f"{len(record)} cells, the header names {n}"
        yield line, cells


def _records(drop: DropFile, header: bool) -> Iterator[tuple[int, list | dict]]:
    try:
        if drop.format == "csv":
            yield from _csv_records(drop, header)
        elif drop.format == "jsonl":
            yield from _jsonl_records(drop, header)
        else:
            yield from _xlsx_records(drop, header)
    except UnicodeDecodeError:
        raise FileError(reasons.NOT_TEXT.format(encoding=drop.encoding)) from None


class _Overlong(Exception):
    """A physical line longer than the limit (raised through csv.reader, which passes it on)."""


class _Lines:
    """A text file's physical lines, at most ``limit`` characters each, counting the quotes of
    the record being read: after a bad record, ``skip`` finds where it ends without parsing it."""

    def __init__(self, fh, limit: int) -> None:
        self.fh, self.limit = fh, limit
        #: quote characters since the record started (odd: a quoted CSV cell is open)
        self.quotes = 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        line = self.fh.readline(self.limit)
        if not line:
            raise StopIteration
        self.quotes += line.count('"')
        if len(line) == self.limit and not line.endswith(("\n", "\r")):
            raise _Overlong
        return line

    def skip(self, *, line_ended: bool, quoted: bool) -> None:
        """Skip the rest of a bad record: to the end of its physical line and, for CSV, on to
        the end of the line where a quoted cell left open closes (never more than a line read
        at once)."""
        while not line_ended or (quoted and self.quotes % 2):
            part = self.fh.readline(self.limit)
            if not part:
                return
            self.quotes += part.count('"')
            line_ended = part.endswith(("\n", "\r"))


def _bad_row(number: int, header: bool, reason: str) -> Iterator[tuple[int, dict]]:
    """A row that cannot be read: the file's fault if it is the header, else an invalid row."""
    if header:
        raise FileError(reasons.AT_LINE.format(line=number, reason=reason))
    yield number, {ROW_ERROR: reason}


def _numbered(items: Iterator, lines: _Lines, quoted: bool) -> Iterator[tuple[int, Any, str | None]]:
    """(row number, item, None) for each item read from ``lines`` (a CSV record or a JSON line),
    or (row number, None, why) for one that could not be read, skipped whole: the next row is
    read afresh (csv.reader starts a new record at the next line it is given)."""
    number = 0
    while True:
        number += 1
        lines.quotes = 0
        try:
            item = next(items)
        except StopIteration:
            return
        except _Overlong:
            lines.skip(line_ended=False, quoted=quoted)
            yield number, None, reasons.LINE_TOO_LONG.format(limit=lines.limit)
        except csv.Error as exc:
            lines.skip(line_ended=True, quoted=quoted)
            yield number, None, (reasons.CELL_TOO_LONG.format(limit=CSV_MAX_CELL) if "field limit" in str(exc)
                                 else reasons.CSV_ROW.format(detail=exc))
        else:
            yield number, item, None


def _csv_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list | dict]]:
    with open(drop.path, encoding=drop.encoding, newline="") as fh:
        lines = _Lines(fh, drop.limits.max_line_chars)
        # Spreadsheet rows count records (a quoted cell may span lines), header = row 1.
        for number, record, error in _numbered(csv.reader(lines), lines, quoted=True):
            if error is not None:
                yield from _bad_row(number, number == 1, error)
            elif number > 1:
                yield number, record
            elif header:
                yield number, record
                return


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_NESTING = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply a JSON text nests arrays and objects, counted without parsing it (json.loads
    recurses once per level: 100,000 ``[`` would end in RecursionError)."""
    depth = deepest = 0
    for m in _JSON_NESTING.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _json_object(text: str, depth: int) -> tuple[dict | None, str | None]:
    """A JSON line as an object, or why it is not one."""
    if text.count("[") + text.count("{") > depth and json_depth(text) > depth:  # the cheap bound first
        return None, reasons.JSON_TOO_DEEP.format(limit=depth)
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None, reasons.NOT_JSON
    return (obj, None) if isinstance(obj, dict) else (None, reasons.NOT_JSON_OBJECT)


def _jsonl_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list | dict]]:
    with open(drop.path, encoding=drop.encoding) as fh:
        lines = _Lines(fh, drop.limits.max_line_chars)
        for number, text, error in _numbered(lines, lines, quoted=False):
            if error is None:
                if not text.strip():
                    continue
                obj, error = _json_object(text, drop.limits.max_json_depth)
            if error is not None:
                yield from _bad_row(number, header, error)
            elif header:
                yield number, list(obj)
                return
            else:
                yield number, {str(k).strip(): cell_text(v) for k, v in obj.items()}


# -- XLSX -------------------------------------------------------------------------------------
#: what a part of a workbook is read in, to check it
XML_CHUNK = 1 << 20
#: a shared string: <si>, <si ...>, or with a namespace prefix (<x:si>)
_SHARED_STRING = re.compile(rb"<si[\s/>]")
_PREFIXED_SHARED_STRING = re.compile(rb"<[A-Za-z_][\w.-]*:si[\s/>]")
_XML_ENCODING = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")
#: a tag that could start a match is shorter than this: a chunk's tail is carried this far
_TAG_CARRY = 256


def check_workbook(path: Path, limits: DeliveryConfig) -> None:
    """Refuse a workbook before anything builds on it (FileError): parts that unzip to more than
    ``xlsx_max_unzipped_bytes`` (from the zip's directory: zipfile never yields more than a part's
    declared size), more than ``xlsx_max_shared_strings`` shared strings (counted while streaming
    the parts), a DTD or entity declaration in any part (defusedxml's rule: never in a real
    workbook, and the way to XML bombs and external entities), or XML not in UTF-8."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            unzipped = sum(i.file_size for i in infos)
            if unzipped > limits.xlsx_max_unzipped_bytes:
                raise FileError(reasons.XLSX_TOO_LARGE.format(size=unzipped, limit=limits.xlsx_max_unzipped_bytes))
            strings = 0
            for info in infos:
                strings = _check_part(archive, info, strings, limits.xlsx_max_shared_strings)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, zlib.error,
            RuntimeError) as exc:  # RuntimeError: an encrypted part
        raise FileError(reasons.NOT_XLSX.format(error=exc.__class__.__name__)) from None


def _check_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo, count: int, limit: int) -> int:
    """One part: the shared strings counted so far plus its own (FileError past ``limit``); parts
    that are not XML (images) are left alone."""
    with archive.open(info) as part:
        buffer = part.read(XML_CHUNK)
        if buffer.startswith((b"\xfe\xff", b"\xff\xfe")) or b"\0" in buffer[:4]:
            raise FileError(reasons.XLSX_NOT_UTF8)  # UTF-16/32 XML: a DTD would hide from the byte check
        head = buffer[:_TAG_CARRY].removeprefix(b"\xef\xbb\xbf").lstrip()
        if not head.startswith(b"<"):
            return count
        declared = _XML_ENCODING.match(head)
        if declared and declared.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
            raise FileError(reasons.XLSX_NOT_UTF8)
        while buffer:
            more = part.read(XML_CHUNK)
            # no tag straddles the cut: it is at the last '<', unless that is too far back to matter
            cut = buffer.rfind(b"<") if more else -1
            if cut == -1 or len(buffer) - cut > _TAG_CARRY:
                cut = len(buffer)
            done, buffer = buffer[:cut], buffer[cut:] + more
            if b"<!DOCTYPE" in done or b"<!ENTITY" in done:
                raise FileError(reasons.XLSX_DTD)
            count += len(_SHARED_STRING.findall(done))
            if b":si" in done:
                count += len(_PREFIXED_SHARED_STRING.findall(done))
            if count > limit:
                raise FileError(reasons.XLSX_TOO_MANY_STRINGS.format(limit=limit))
    return count


def _load_workbook(drop: DropFile) -> None:
    """Check the workbook, then load it once (openpyxl reads every shared string on load): the
    header and the rows come from the same book, closed after the rows or with the DropFile."""
    from openpyxl import load_workbook

    check_workbook(drop.path, drop.limits)
    try:
        book = load_workbook(drop.path, read_only=True, data_only=True)
    except Exception as exc:  # a crafted part can fail anywhere in openpyxl: the file's fault
        raise FileError(reasons.NOT_XLSX.format(error=exc.__class__.__name__)) from None
    drop.book = book
    weakref.finalize(drop, book.close)


def _xlsx_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list]]:
    if drop.book is None:
        _load_workbook(drop)
    book = drop.book
    try:
        sheet = book.worksheets[0]
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            record = [cell_text(v) for v in values]
            if number == 1:
                if header:
                    yield number, record
                    return
                continue
            yield number, record
    except FileError:
        raise
    except Exception as exc:  # a malformed sheet, found while streaming it
        raise FileError(reasons.NOT_XLSX.format(error=exc.__class__.__name__)) from None
    finally:
        if not header:
            drop.book = None
            book.close()

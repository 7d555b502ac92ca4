"""Stage `read`: a drop file as a stream of (row number, {column: text}), never all at once.

CSV in UTF-8 (with or without BOM) or GB18030 (what Excel writes in China; detected when the
start of the file is not UTF-8, or named with ``encoding``), JSON Lines, XLSX (openpyxl,
read-only). Row numbers are the ones the agency's spreadsheet shows: the header is row 1.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mailserver.cells import cell_text
from mailserver.errors import ValidationError

from . import reasons

FORMATS = ("csv", "jsonl", "xlsx")
SNIFF_BYTES = 1 << 16


class FileError(ValidationError):
    """The drop as a whole cannot be run (unreadable, empty, columns missing, already run)."""


@dataclass
class DropFile:
    path: Path
    format: str
    encoding: str | None
    #: column names as the agency wrote them
    columns: list[str] = field(default_factory=list)


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


def open_drop(path: Path, encoding: str | None = None) -> DropFile:
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
    drop = DropFile(path, fmt, enc)
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
    for line, record in _records(drop, header=False):
        if isinstance(record, dict):
            yield line, record
            continue
        if not any(str(c).strip() for c in record):
            continue
        cells = {c: (str(record[i]).strip() if i < len(record) else "") for i, c in enumerate(columns)}
        if len(record) > len(columns) and any(str(c).strip() for c in record[len(columns):]):
            cells["\0extra"] = f"{len(record)} cells, the header names {len(columns)}"
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
    except csv.Error as exc:
        raise FileError(f"CSV format error: {exc}") from None


def _csv_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list]]:
    with open(drop.path, encoding=drop.encoding, newline="") as fh:
        reader = csv.reader(fh)
        # Spreadsheet rows count records (a quoted cell may span lines), header = row 1.
        for number, record in enumerate(reader, start=1):
            if number == 1:
                if header:
                    yield number, record
                    return
                continue
            yield number, record


def _jsonl_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list | dict]]:
    with open(drop.path, encoding=drop.encoding) as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                if header:
                    raise FileError(f"line {number}: not a JSON object") from None
                yield number, {"\0error": reasons.NOT_JSON}
                continue
            if not isinstance(obj, dict):
                if header:
                    raise FileError(f"line {number}: not a JSON object")
                yield number, {"\0error": reasons.NOT_JSON_OBJECT}
                continue
            if header:
                yield number, list(obj)
                return
            yield number, {str(k).strip(): cell_text(v) for k, v in obj.items()}


def _xlsx_records(drop: DropFile, header: bool) -> Iterator[tuple[int, list]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(drop.path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise FileError(f"not a readable XLSX workbook ({exc.__class__.__name__})") from None
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
    finally:
        book.close()

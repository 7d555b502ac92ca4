"""Bulk registration from a CSV or an XLSX workbook (``name,id_number,phone[,address]``):
streaming, in batches.

All-or-report: every bad row is reported with its line number and reason, the good rows are
registered. Safe to rerun: a citizen already registered (same ID number) is counted, not added
again, and a crash loses at most the batch in flight (its transaction rolls back). Accounts made
here get a one-time activation code instead of a password; the codes go to a CSV for the letters
that carry them, written after each batch commits.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TextIO

from sqlalchemy import insert, select

from ..cells import cell_text
from ..errors import ValidationError
from ..identity import addresses, idnumber
from ..identity.passwords import activation_code, normalize_code
from ..store.models import Account, AuditLog, Citizen
from .citizens import ACTIVATION, assign_addresses, check_name, check_phone
from .context import Registry
from .folders import create_default_folders

COLUMNS = ("name", "id_number", "phone", "address")
BATCH = 5000


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_registered: int = 0
    #: (line number in the file, reason)
    errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _Row:
    line: int
    name: str
    number: str
    phone: str | None
    address: str | None


def open_text(path: Path, encoding: str | None = None) -> TextIO:
    """UTF-8 (with or without BOM) unless told otherwise; GB18030 (Excel in China) when the
    start of the file is not UTF-8."""
    if encoding is None:
        with open(path, "rb") as fh:
            head = fh.read(65536)
        try:
            head.decode("utf-8")
            encoding = "utf-8-sig"
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the sample is still UTF-8.
            encoding = "utf-8-sig" if exc.start >= len(head) - 3 else "gb18030"
    return open(path, encoding=encoding, newline="")


#: what a line of the file is: its number as the clerk sees it (the CSV line, the sheet's row)
#: and its cells; a CSV's cells are text, a workbook's may be numbers or dates
Records = Iterable[tuple[int, Sequence[object]]]


def csv_records(fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(fh)
    for record in reader:
        yield reader.line_num, record


def is_xlsx(path: Path) -> bool:
    """By name, or by content (an XLSX is a ZIP archive) for a workbook saved without it."""
    if path.suffix.lower() == ".xlsx":
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def xlsx_records(path: Path) -> Iterator[tuple[int, tuple]]:
    """The first worksheet's rows, numbered as Excel shows them. Cells keep their type, so that
    an ID number typed into a number cell can be refused (Excel keeps 15 digits of 18)."""
    import zipfile

    from openpyxl import load_workbook

    with open(path, "rb") as fh:  # a file object: openpyxl judges a path by its extension
        try:
            book = load_workbook(fh, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise ValidationError(f"{path.name}: not a readable XLSX workbook ({exc.__class__.__name__})") from None
        try:
            for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
                yield number, values
        finally:
            book.close()


NUMBER_CELL = ("ID number is a number cell, and Excel keeps only 15 of its 18 digits: "
               "format the column as Text and enter the number again")


def read_rows(source: TextIO | Records, report: ImportReport, domain: str) -> Iterator[_Row]:
    """Validated rows from a CSV (a text file) or from numbered records (``xlsx_records``)."""
    records = csv_records(source) if hasattr(source, "read") else source
    first = True
    columns = {c: i for i, c in enumerate(COLUMNS)}
    for line, raw in records:
        record = [cell_text(v) for v in raw]
        while record and not record[-1].strip():
            record.pop()  # a workbook's row is as wide as its widest row
        if first:
            first = False
            header = [c.strip().lower().replace(" ", "_").replace("-", "_") for c in record]
            if header and header[0] in COLUMNS:
                unknown = [c for c in header if c not in COLUMNS]
                if unknown or "name" not in header or "id_number" not in header:
                    raise ValidationError(f"line {line}: header must name the columns name,id_number,phone[,address]"
                                          f" (unexpected: {', '.join(unknown) or 'missing name or id_number'})")
                columns = {c: i for i, c in enumerate(header)}
                continue
        if not any(cell.strip() for cell in record):
            continue
        report.rows += 1

        def cell(name: str) -> str | None:
            i = columns.get(name)
            return record[i].strip() if i is not None and i < len(record) else None

        try:
            if len(record) > len(columns):
                raise ValidationError(f"{len(record)} columns, expected at most {len(columns)}")
            id_at = columns["id_number"]
            if id_at < len(raw) and isinstance(raw[id_at], (int, float)):
                raise ValidationError(NUMBER_CELL)
            name = check_name(cell("name") or "")
            number = idnumber.normalize(cell("id_number") or "")
            phone = check_phone(cell("phone"))
            address = cell("address") or None
            if address:
                address = addresses.normalize_address(address, domain)
                if not address.endswith("@" + domain):
                    raise ValidationError(f"{address}: not at {domain}")
        except ValidationError as exc:
            report.errors.append((line, str(exc)))
            continue
        yield _Row(line, name, number, phone, address)


def _batches(rows: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    batch: list[_Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_citizens(
    reg: Registry,
    fh: TextIO | Records,
    codes_out: TextIO | None,
    progress: Callable[[int], None] = lambda n: None,
    batch_size: int = BATCH,
) -> ImportReport:
    report = ImportReport()
    ring = reg.keyring
    domain = reg.domain
    ttl = dt.timedelta(seconds=reg.config.passwords.activation_ttl)
    seen: set[int] = set()  # 64-bit prefixes of the index: a repeat inside this file
    codes = csv.writer(codes_out) if codes_out is not None else None
    if codes is not None and os.fstat(codes_out.fileno()).st_size == 0:
        codes.writerow(["address", "name", "phone", "activation_code", "expires"])
    for batch in _batches(read_rows(fh, report, domain), batch_size):
        indexed = []
        for row in batch:
            index = ring.index(row.number)
            key = int.from_bytes(index[:8], "big")
            if key in seen:
                report.errors.append((row.line, "ID number repeats an earlier row of this file"))
                continue
            seen.add(key)
            indexed.append((row, index))
        expires = dt.datetime.now(dt.timezone.utc) + ttl
        letters = []
        with reg.store.session() as s:
            known = set(s.scalars(select(Citizen.id_index).where(Citizen.id_index.in_([i for _, i in indexed]))))
            fresh = [(r, i) for r, i in indexed if i not in known]
            report.already_registered += len(indexed) - len(fresh)
            explicit = [r.address for r, _ in fresh if r.address]
            taken = set(s.scalars(select(Account.address).where(Account.address.in_(explicit)))) if explicit else set()
            keep = []
            for r, i in fresh:
                if r.address and r.address in taken:
                    report.errors.append((r.line, f"address {r.address} is already taken"))
                    continue
                if r.address:
                    taken.add(r.address)
                keep.append((r, i))
            derived = iter(assign_addresses(s, domain, [addresses.base_local_part(r.name) for r, _ in keep
                                                        if not r.address]))
            # Plain executemany, then the new ids read back by their unique keys: on SQLite an
            # INSERT ... RETURNING in parameter order runs row by row.
            citizen_ids = []
            if keep:
                s.execute(insert(Citizen.__table__),
                          [{"name": r.name, "id_index": i, "id_cipher": ring.encrypt(r.number), "phone": r.phone,
                            "created_at": expires - ttl} for r, i in keep])
                by_index = dict(s.execute(select(Citizen.id_index, Citizen.id)
                                          .where(Citizen.id_index.in_([i for _, i in keep]))).all())
                citizen_ids = [by_index[i] for _, i in keep]
            account_rows = []
            for (r, _), cid in zip(keep, citizen_ids):
                code = activation_code()
                address = r.address or next(derived)
                letters.append((address, r.name, r.phone or "", code, expires.date().isoformat()))
                account_rows.append({
                    "address": address, "citizen_id": cid, "state": "pending", "password_hash": None,
                    "activation_hash": ring.secret_hash(ACTIVATION, normalize_code(code)),
                    "activation_expires": expires, "created_at": expires - ttl,
                })
            if account_rows:
                s.execute(insert(Account.__table__), account_rows)
                account_ids = list(s.scalars(select(Account.id).where(
                    Account.address.in_([row["address"] for row in account_rows]))))
                create_default_folders(s, account_ids)
                s.add(AuditLog(actor="operator", action="citizen.import", detail=f"{len(account_ids)} accounts"))
        report.imported += len(letters)
        if codes is not None:
            codes.writerows(letters)
            codes_out.flush()
            os.fsync(codes_out.fileno())
        progress(len(batch))
    return report


def import_file(reg: Registry, path: Path, codes_path: Path | None, encoding: str | None = None,
                progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    """Import a CSV (``encoding`` as ``open_text``) or an XLSX workbook (its first sheet)."""
    with contextlib.ExitStack() as stack:
        if is_xlsx(path):
            source: TextIO | Records = xlsx_records(path)
            stack.callback(source.close)  # closes the workbook even if the import stops early
        else:
            source = stack.enter_context(open_text(path, encoding))
        if codes_path is None:
            return import_citizens(reg, source, None, progress)
        fd = os.open(codes_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with io.open(fd, "w", encoding="utf-8", newline="") as out:
            return import_citizens(reg, source, out, progress)

"""Bulk registration from a CSV or an XLSX workbook (``name,id_number,phone[,address]``):
streaming, in batches.

All-or-report: every bad row is reported with its line number and reason, the good rows are
registered. Safe to rerun: a citizen already registered (same ID number) is counted, not added
again, and a crash loses at most the batch in flight (its transaction rolls back). Accounts made
here get a one-time activation code instead of a password; the codes go to a CSV for the letters
that carry them.

No account without its letter: a batch's codes are written and fsynced before the batch's
transaction commits, so a run killed at any point has the code of every account it registered
on disk. A batch that then did not commit leaves codes for accounts that do not exist (or, after
the rerun registered them, that a later code replaced); ``reconcile_codes``, at the end of every
import and reissue, drops those lines, checking each line's code against its account's hash.
``reissue_codes`` gives pending accounts a fresh code, for letters that were lost.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TextIO

from sqlalchemy import insert, select

from ..cells import SpreadsheetWriter, cell_text
from ..errors import Conflict, ValidationError
from ..identity import addresses, idnumber
from ..identity.passwords import activation_code, normalize_code
from ..privatefiles import open_private, replace_private
from ..store.models import Account, Citizen
from . import audit
from .citizens import ACTIVATION, assign_addresses, check_name, check_phone
from .context import Registry
from .folders import create_default_folders

COLUMNS = ("name", "id_number", "phone", "address")
BATCH = 5000
#: the activation-codes CSV (one line per letter)
CODES_HEADER = ("address", "name", "phone", "activation_code", "expires")
#: the codes file is plain UTF-8, as it always was (mail-merge tools read it as such)
CODES_ENCODING = "utf-8"


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_registered: int = 0
    #: (line number in the file, reason)
    errors: list[tuple[int, str]] = field(default_factory=list)
    #: codes-file lines dropped as opening nothing (``reconcile_codes``)
    stale_codes: int = 0


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


def _batches(rows: Iterator, size: int) -> Iterator[list]:
    batch: list = []
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
    codes = LetterWriter(codes_out) if codes_out is not None else None
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
                if codes is not None:
                    codes.write(letters)  # on disk before the commit (the session's end)
                audit.record(s, "citizen.import", f"{len(account_ids)} accounts")
        report.imported += len(letters)
        progress(len(batch))
    return report


@contextlib.contextmanager
def open_import(path: Path, encoding: str | None = None) -> Iterator[TextIO | Records]:
    """An import file's lines: a CSV (``encoding`` as ``open_text``) or an XLSX workbook (its
    first sheet), closed when the block ends, even early."""
    if is_xlsx(path):
        records = xlsx_records(path)
        try:
            yield records
        finally:
            records.close()
    else:
        with open_text(path, encoding) as fh:
            yield fh


def import_file(reg: Registry, path: Path, codes_path: Path | None, encoding: str | None = None,
                progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    """Import a CSV or an XLSX workbook; the codes appended to ``codes_path``, then reconciled."""
    with open_import(path, encoding) as source:
        if codes_path is None:
            return import_citizens(reg, source, None, progress)
        with open_codes(codes_path) as out:
            report = import_citizens(reg, source, out, progress)
            report.stale_codes = reconcile_codes(reg, codes_path)
    return report


class LetterWriter:
    """Lines of the activation-codes CSV, each batch on disk before its transaction commits."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._csv = SpreadsheetWriter(out)
        try:
            st = os.fstat(out.fileno())
        except OSError:  # a stream without a file (click's test runner)
            st = None
        # a terminal or a pipe (codes on standard output) has no fsync, and starts with a header
        self._sync = st is not None and stat.S_ISREG(st.st_mode)
        if not self._sync or st.st_size == 0:
            self._csv.writerow(CODES_HEADER)

    def write(self, letters: list[tuple]) -> None:
        self._csv.writerows(letters)
        self.out.flush()
        if self._sync:
            os.fsync(self.out.fileno())


def reconcile_codes(reg: Registry, codes_path: Path) -> int:
    """Drop the lines of a codes file whose code opens nothing: the account does not exist (its
    batch never committed) or is pending under another code (a rerun or a reissue replaced it).
    Lines of accounts already activated or disabled stay, as the record of letters sent. The file
    is replaced whole, and only if a line goes; call it holding ``open_codes``. Returns the number
    of lines dropped."""
    if not codes_path.is_file():
        return 0
    with open(codes_path, encoding="utf-8-sig", newline="") as src:
        stale = _stale_lines(reg, csv.reader(src))
    if stale:
        with open(codes_path, encoding="utf-8-sig", newline="") as src, \
                replace_private(codes_path, encoding=CODES_ENCODING) as out:
            SpreadsheetWriter(out).writerows(line for n, line in enumerate(csv.reader(src)) if n not in stale)
    return len(stale)


def _stale_lines(reg: Registry, lines: Iterator[list[str]]) -> set[int]:
    """The numbers (the header is 0) of the codes file's lines that open nothing."""
    ring = reg.keyring
    at_address, at_code = CODES_HEADER.index("address"), CODES_HEADER.index("activation_code")
    stale: set[int] = set()
    numbered = enumerate(lines)
    next(numbered, None)  # the header
    for part in _batches(numbered, BATCH):
        wanted = {line[at_address] for _, line in part if len(line) > at_code}
        with reg.store.reader() as s:
            accounts = {address: (state, code_hash) for address, state, code_hash in s.execute(
                select(Account.address, Account.state, Account.activation_hash).where(Account.address.in_(wanted)))}
        for n, line in part:
            state, code_hash = accounts.get(line[at_address], (None, None)) if len(line) > at_code else (None, None)
            if state is None or (state == "pending" and code_hash != ring.secret_hash(
                    ACTIVATION, normalize_code(line[at_code]))):
                stale.add(n)
    return stale


@dataclass
class ReissueReport:
    issued: int = 0
    #: (address, state) of the accounts skipped: active or disabled, no code opens them
    not_pending: list[tuple[str, str]] = field(default_factory=list)
    #: rows of an import file whose ID number is not registered
    not_registered: int = 0
    #: the import file's rows that could not be read (line, reason)
    errors: list[tuple[int, str]] = field(default_factory=list)
    stale_codes: int = 0


def _reissue(reg: Registry, s, accounts: list[tuple[Account, Citizen]], codes: LetterWriter, actor: str) -> int:
    """Fresh codes for pending accounts, in the caller's transaction: the old codes stop working,
    the letters are on disk before the commit, and each account's reissue is audited."""
    ring = reg.keyring
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=reg.config.passwords.activation_ttl)
    letters = []
    for account, citizen in accounts:
        code = activation_code()
        account.activation_hash = ring.secret_hash(ACTIVATION, normalize_code(code))
        account.activation_expires = expires
        letters.append((account.address, citizen.name, citizen.phone or "", code, expires.date().isoformat()))
        audit.record(s, "citizen.reissue-code", account.address, actor=actor)
    s.flush()
    codes.write(letters)
    return len(letters)


def _accounts(s, where) -> list[tuple[Account, Citizen]]:
    return [tuple(row) for row in s.execute(select(Account, Citizen).join(Citizen, Citizen.id == Account.citizen_id)
                                            .where(where).order_by(Account.id))]


def reissue_codes(reg: Registry, addresses: list[str], codes_out: TextIO, actor: str = "operator") -> ReissueReport:
    """New activation codes for the citizen accounts at ``addresses``, all pending; refused
    (Conflict, nothing changed) if one is not a citizen's account or no longer pending."""
    wanted = list(dict.fromkeys(a.strip().lower() for a in addresses))
    codes = LetterWriter(codes_out)
    with reg.store.session() as s:
        found = {account.address: (account, citizen) for account, citizen in _accounts(s, Account.address.in_(wanted))}
        problems = []
        for address in wanted:
            state = found[address][0].state if address in found else None
            if state is None:
                problems.append(f"{address}: no citizen account")
            elif state != "pending":
                problems.append(f"{address} is {state}: an activation code would not open it"
                                + (" (`citizen passwd` sets a new password)" if state == "active" else ""))
        if problems:
            raise Conflict("no codes issued: " + "; ".join(problems))
        return ReissueReport(issued=_reissue(reg, s, [found[a] for a in wanted], codes, actor))


def reissue_file(reg: Registry, source: TextIO | Records, codes_out: TextIO, actor: str = "operator",
                 progress: Callable[[int], None] = lambda n: None, batch_size: int = BATCH) -> ReissueReport:
    """New activation codes for every account of an import file (matched by ID number) still
    pending; the others are listed, not changed."""
    read = ImportReport()
    report = ReissueReport(errors=read.errors)
    codes = LetterWriter(codes_out)
    ring = reg.keyring
    for batch in _batches(read_rows(source, read, reg.domain), batch_size):
        indexes = {ring.index(row.number) for row in batch}
        with reg.store.session() as s:
            accounts = _accounts(s, Citizen.id_index.in_(indexes))
            report.not_registered += len(indexes) - len(accounts)
            report.not_pending += [(a.address, a.state) for a, _ in accounts if a.state != "pending"]
            report.issued += _reissue(reg, s, [(a, c) for a, c in accounts if a.state == "pending"], codes, actor)
        progress(len(batch))
    return report


def open_codes(codes_path: Path) -> TextIO:
    """The activation-codes CSV, appended to, only its owner can read it, under an exclusive lock
    until it is closed: imports and reissues into one file take turns, and reconcile while they
    hold it. A writer that waited while ``reconcile_codes`` replaced the file opens the new one."""
    while True:
        fh = open_private(codes_path, append=True, encoding=CODES_ENCODING)
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(codes_path).st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        fh.close()

"""`notice preview`: one row of a drop rendered as the citizen would receive it."""
from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

from mailserver.errors import NotFound, ValidationError
from mailserver.registry import Registry

from . import read as read_mod
from .catalog import NoticeDefinition
from .pipeline import RowContext, RunSpec, process_rows
from .rowstate import RECEIVED, UNMATCHED, RowState
from .runner import agency_info
from .validate import column_mapping


def preview_row(reg: Registry, definition: NoticeDefinition, agency_id: str, path: Path, row_number: int,
                encoding: str | None = None, raw: bool = False) -> str:
    """The message for one row: headers decoded and both parts (or the raw RFC 5322 text);
    for a citizen without a mailbox, the paper letter's text."""
    drop_file = read_mod.open_drop(path, encoding, reg.config.delivery)
    if row_number == 1 and drop_file.format != "jsonl":  # JSON Lines have no header line
        raise ValidationError(f"row 1 of {path.name} is its header (the column names); the first row of data is "
                              "row 2, as the spreadsheet numbers it")
    mapping = column_mapping(definition, drop_file.columns)
    for line, cells in read_mod.rows(drop_file):
        if line == row_number:
            break
    else:
        raise NotFound(f"{path} has no row {row_number}")
    spec = RunSpec(reg.config, definition.id, agency_info(reg, agency_id, definition.id), mapping)
    row = process_rows(RowContext(spec, reg.store), [RowState(line, cells)])[0]
    if row.status == RECEIVED and row.raw is not None:
        return row.raw.decode("ascii").replace("\r\n", "\n") if raw else readable(row.raw)
    if row.status == UNMATCHED and row.paper:
        subject, text = row.paper
        return f"[paper mail: {row.reason}]\n{subject}\n\n{text}"
    raise ValidationError(f"row {row_number}: {row.status}: {row.reason}")


def readable(raw: bytes) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    out = [f"{name}: {value}" for name, value in msg.items()]
    for part in msg.iter_parts():
        out += ["", f"----- {part.get_content_type()} -----", part.get_content().replace("\r\n", "\n").rstrip()]
    return "\n".join(out) + "\n"

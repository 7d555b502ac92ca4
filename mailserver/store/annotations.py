"""RFC 5464 METADATA entries of an account (blocking: call through ``ctx.run``).

An entry lives on the server (mailbox "", ``folder_id`` NULL) or on one of the account's
folders; its name starts "/private" or "/shared", both the account's own here (there are no
shared mailboxes). A folder's entries go with it on DELETE (``mailboxes.delete_folder``) and,
being keyed by its id, move with it on RENAME. Writers hold the account's INBOX row, so that one
account's entries are written one command at a time (one row per name, the count checked).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..errors import MetadataTooLarge, MetadataTooMany
from .db import Store
from .driver import RawRead, driver_execute, driver_rows, raw_reader
from .mailbox_sql import folder_row, writing

SEP = "/"
#: GETMETADATA DEPTH infinity
INFINITY = -1


@dataclass(frozen=True)
class Found:
    """What GETMETADATA answers: the entries asked for (a value, or None where there is none),
    and the size of the largest value left out for MAXSIZE (0: none was)."""

    entries: list[tuple[str, bytes | None]]
    longest_omitted: int


def _target(session, account_id: int, mailbox: str) -> int | None:
    """The folder id of ``mailbox``, None for the server (""); NotFound for no such folder."""
    return None if mailbox == "" else folder_row(session, account_id, mailbox).id


def _where(folder_id: int | None) -> tuple[str, tuple]:
    if folder_id is None:
        return "account_id = ? AND folder_id IS NULL", ()
    return "account_id = ? AND folder_id = ?", (folder_id,)


def _wanted(name: str, entry: str, depth: int) -> bool:
    """Whether stored ``name`` answers for ``entry`` at ``depth`` (0, 1 or INFINITY)."""
    if name == entry:
        return True
    if depth == 0 or not name.startswith(entry + SEP):
        return False
    return depth == INFINITY or SEP not in name[len(entry) + 1:]


def get_metadata(store: Store, account_id: int, mailbox: str, entries: Iterable[str], depth: int = 0,
                 maxsize: int | None = None) -> Found:
    """RFC 5464 4.2: each entry asked for (None if it has no value) followed by its descendants
    to ``depth`` (an entry with neither answers NIL); values longer than ``maxsize`` are left out and the longest such size kept.
    Only the chosen values are read."""
    with raw_reader(store) as s:
        folder_id = _target(s, account_id, mailbox)
        where, extra = _where(folder_id)
        sizes = dict(driver_rows(s, f"SELECT name, length(value) FROM annotation WHERE {where}", account_id, *extra))
        chosen: list[str] = []
        for entry in entries:
            below = sorted(n for n in sizes if n != entry and _wanted(n, entry, depth))
            # an entry with no value is answered NIL, unless its descendants answer for it
            chosen += ([entry] if entry in sizes or not below else []) + below
        chosen = list(dict.fromkeys(chosen))
        longest = max((sizes[n] for n in chosen if n in sizes and maxsize is not None and sizes[n] > maxsize),
                      default=0)
        kept = [n for n in chosen if n not in sizes or maxsize is None or sizes[n] <= maxsize]
        values = _values(s, where, (account_id, *extra), [n for n in kept if n in sizes])
    return Found([(n, values.get(n)) for n in kept], longest)


def _values(s: RawRead, where: str, params: tuple, names: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(0, len(names), 500):
        part = names[i:i + 500]
        rows = driver_rows(s, f"SELECT name, value FROM annotation WHERE {where} AND name IN "
                              f"({', '.join('?' * len(part))})", *params, *part)
        out.update((n, bytes(v)) for n, v in rows)
    return out


def set_metadata(store: Store, account_id: int, mailbox: str, items: Iterable[tuple[str, bytes | None]],
                 max_size: int, max_entries: int) -> None:
    """RFC 5464 4.3: set each entry (a None value removes it), all or none. MetadataTooLarge for
    a value past ``max_size``, MetadataTooMany if the account would hold more than
    ``max_entries``; NotFound for no such folder."""
    items = list(dict((name, value) for name, value in items).items())  # the last value of a name wins
    if any(v is not None and len(v) > max_size for _, v in items):
        raise MetadataTooLarge(max_size)
    with writing(store) as s:
        folder_row(s, account_id, "INBOX", lock=True)  # PostgreSQL: one writer of the account's entries
        folder_id = _target(s, account_id, mailbox)
        where, extra = _where(folder_id)
        driver_execute(s, f"DELETE FROM annotation WHERE {where} AND name = ?",
                       [(account_id, *extra, name) for name, _ in items])
        added = [(account_id, folder_id, name, value) for name, value in items if value is not None]
        if added:
            (count,), = driver_rows(s, "SELECT count(*) FROM annotation WHERE account_id = ?", account_id)
            if count + len(added) > max_entries:
                raise MetadataTooMany(f"an account has at most {max_entries} METADATA entries")
            driver_execute(s, "INSERT INTO annotation (account_id, folder_id, name, value) VALUES (?, ?, ?, ?)", added)

"""Rotating the ID-number encryption key: add a version, re-encrypt, retire the old versions.

Two columns hold ciphertexts under the ID-number encryption key, each starting with its key
version: citizens' ID numbers (``citizen.id_cipher``) and the rows of drops kept for the report
and ``drop retry`` (``drop_row.data``, sealed since they hold ID numbers). Both are re-encrypted,
and a version is retired only when neither uses it.

``rotate`` saves the key file with the new version (the old ones kept) before it changes any row,
so that a crash at any point leaves every row readable; the rows are then re-encrypted in batches,
one transaction each. Run again while rows are still on an older version, it adds no key and
carries on with those rows only. The MAC key (the ID-number index, activation-code hashes) is
never rotated: see ``mailserver.identity.keys``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import Column, LargeBinary, Table, bindparam, func, literal_column, select

from ..config import Config
from ..errors import UserError
from ..identity.keys import KEYFILE, VERSION_BYTES, IdKeyring, key_file_lock, version_of, version_prefix
from ..store import Store
from ..store.models import Citizen
from ..store.models.delivery import DropRow
from . import audit
from .context import Registry

DEFAULT_BATCH = 1000


def _reencrypt_number(ring: IdKeyring, blob: bytes) -> bytes:
    return ring.encrypt(ring.decrypt(blob))


def _reseal_row(ring: IdKeyring, blob: bytes) -> bytes:
    from ..identity.rowseal import seal_row, unseal_row

    return seal_row(ring, unseal_row(ring, blob))


@dataclass(frozen=True)
class Encrypted:
    """A column of ciphertexts under the ID-number encryption key, each prefixed with its version."""

    label: str
    table: Table
    column: str
    #: the clear value re-encrypted under the ring's current version
    reencrypt: Callable[[IdKeyring, bytes], bytes]

    @property
    def col(self) -> Column:
        return self.table.c[self.column]


COLUMNS = (
    Encrypted("citizen ID numbers", Citizen.__table__, "id_cipher", _reencrypt_number),
    Encrypted("sealed drop rows", DropRow.__table__, "data", _reseal_row),
)


def keys_dir(config: Config) -> Path:
    return config.data_path(config.keys.dir)


def _version(col: Column):
    # literal arguments, not bound ones: PostgreSQL matches a GROUP BY expression to the select
    # list only when both are written the same, and two sets of parameters are not
    return func.substr(col, literal_column("1"), literal_column(str(VERSION_BYTES)), type_=LargeBinary)


def usage(store: Store) -> dict[str, Counter]:
    """For each encrypted column: key version -> how many rows use it."""
    out: dict[str, Counter] = {}
    with store.reader() as s:
        for enc in COLUMNS:
            v = _version(enc.col)
            rows = s.execute(select(v, func.count()).where(enc.col.is_not(None)).group_by(v)).all()
            out[enc.label] = Counter({version_of(bytes(prefix)): n for prefix, n in rows})
    return out


def _check_known(ring: IdKeyring, used: dict[str, Counter], path: Path) -> None:
    missing = sorted({v for counts in used.values() for v in counts} - set(ring.enc_keys))
    if missing:
        raise UserError(f"{path}: rows use key version(s) {', '.join(map(str, missing))}, which the key file "
                        "does not hold: restore the keys folder from its backup before rotating or retiring")


def _old(ring: IdKeyring, used: dict[str, Counter]) -> dict[str, Counter]:
    return {label: Counter({v: n for v, n in counts.items() if v != ring.current and n})
            for label, counts in used.items()}


@dataclass(frozen=True)
class KeyStatus:
    path: Path
    current: int
    versions: list[int]
    #: label -> version -> rows
    usage: dict[str, Counter]

    @property
    def missing(self) -> list[int]:
        """Versions rows use that the key file does not hold (rows that cannot be read)."""
        return sorted({v for counts in self.usage.values() for v in counts} - set(self.versions))


def key_status(reg: Registry) -> KeyStatus:
    directory = keys_dir(reg.config)
    ring = IdKeyring.load(directory)
    return KeyStatus(directory / KEYFILE, ring.current, sorted(ring.enc_keys), usage(reg.store))


@dataclass(frozen=True)
class RotateReport:
    path: Path
    version: int
    #: False when an unfinished rotation was carried on (no key added)
    added: bool
    versions: list[int]
    #: label -> the old version -> rows re-encrypted from it
    reencrypted: dict[str, Counter]


def _reencrypt_column(store: Store, ring: IdKeyring, enc: Encrypted, batch_size: int,
                      progress: Callable[[int], object] | None) -> Counter:
    t, col = enc.table, enc.col
    pk = t.c.id
    current = version_prefix(ring.current)
    update = t.update().where(pk == bindparam("row_id")).values({enc.column: bindparam("blob")})
    done: Counter = Counter()
    last = None
    while True:
        with store.session() as s:  # one transaction per batch
            q = select(pk, col).where(col.is_not(None), _version(col) != current)
            if last is not None:
                q = q.where(pk > last)
            rows = s.execute(q.order_by(pk).limit(batch_size).with_for_update()).all()
            if not rows:
                return done
            s.execute(update, [{"row_id": row_id, "blob": enc.reencrypt(ring, bytes(blob))} for row_id, blob in rows])
        for _, blob in rows:
            done[version_of(blob)] += 1
        last = rows[-1][0]
        if progress is not None:
            progress(len(rows))


def rotate(reg: Registry, batch_size: int = DEFAULT_BATCH, progress: Callable[[int], object] | None = None,
           on_start: Callable[[int], object] | None = None, reason: str | None = None) -> RotateReport:
    """Add an encryption key version, make it current and re-encrypt every row on an older one.

    While rows are still on a version older than the current one (a rotation that crashed, or
    rows written by a server not yet restarted), no key is added: those rows are re-encrypted
    under the current version. ``on_start`` gets the number of rows to re-encrypt."""
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    directory = keys_dir(reg.config)
    with key_file_lock(directory):
        ring = IdKeyring.load(directory)
        before = usage(reg.store)
        _check_known(ring, before, directory / KEYFILE)
        pending = _old(ring, before)
        added = not any(pending.values())
        if added:
            ring = ring.rotated()
            # On disk (atomically, old versions kept) before any row is written with it.
            ring.save(directory)
            pending = {label: +counts for label, counts in before.items()}
        reg.__dict__["keyring"] = ring  # this process writes with the new version from now on
        if on_start is not None:
            on_start(sum(sum(c.values()) for c in pending.values()))
        done = {enc.label: _reencrypt_column(reg.store, ring, enc, batch_size, progress) for enc in COLUMNS}
        with reg.store.session() as s:
            audit.record(s, "keys.rotate" if added else "keys.rotate-continue",
                         f"version {ring.current}; re-encrypted " + ", ".join(
                             f"{sum(c.values())} {label}" for label, c in done.items()), reason=reason)
    return RotateReport(directory / KEYFILE, ring.current, added, sorted(ring.enc_keys), done)


@dataclass(frozen=True)
class RetireReport:
    path: Path
    current: int
    removed: list[int]
    versions: list[int]


def retire(reg: Registry, reason: str | None = None) -> RetireReport:
    """Remove from the key file every encryption version but the current one, provided no row
    uses any of them; otherwise refuse and leave the key file as it is."""
    directory = keys_dir(reg.config)
    path = directory / KEYFILE
    with key_file_lock(directory):
        ring = IdKeyring.load(directory)
        used = usage(reg.store)
        _check_known(ring, used, path)
        old = _old(ring, used)
        if any(old.values()):
            detail = "; ".join(
                f"{label}: " + ", ".join(f"{n} on version {v}" for v, n in sorted(counts.items()))
                for label, counts in old.items() if counts)
            raise UserError(f"not retiring any key version: rows still use older versions ({detail}). "
                            "Restart every civicmail server so that it writes with the current version, "
                            "run `civicmail keys rotate` to re-encrypt those rows, then retire")
        removed = sorted(v for v in ring.enc_keys if v != ring.current)
        if removed:
            ring = ring.without(removed)
            ring.save(directory)
            with reg.store.session() as s:
                audit.record(s, "keys.retire", f"removed version(s) {', '.join(map(str, removed))}; "
                             f"current {ring.current}", reason=reason)
        return RetireReport(path, ring.current, removed, sorted(ring.enc_keys))

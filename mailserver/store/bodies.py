"""Message bodies between the database and the blob store (``store/blobs.py``): the hooks the
one mail write path and the readers call, the collector of blobs nothing refers to any more,
and the move of bodies still in the ``content`` table out to the blob store.

Durability. A writer puts its blobs (durable on return) *before* the transaction that inserts
the content rows naming them commits, so an acknowledged message always has its body; a crash
in between leaves at most a blob nothing names, which the collector removes after a grace period.

Collector against writers. Blobs are content-addressed, so a writer may name a blob that already
exists (the same bytes delivered before) while the collector finds it unreferenced and deletes
it. The two are kept apart in the database:

- every collection that deletes blobs raises ``blob_state.epoch`` while it holds the collector's
  lock (SQLite: the database's write lock; PostgreSQL: an exclusive advisory lock, held on a
  second connection until the blobs are deleted, so that a failed commit deletes nothing);
- a writer reads the epoch before it puts its blobs (``stage``), and again inside its write
  transaction under the lock's shared side (``seal``). If it moved, a collection may have deleted
  one of the writer's blobs in between: the writer puts them again, inside the transaction,
  before it commits. A collection that starts later waits for the writer's commit and then sees
  its references.

The one residue: on SQLite the collector deletes blobs inside its transaction (the write lock
ends with it); a COMMIT that fails after that (a failing disk) leaves the epoch unraised.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Callable, Iterable, Sequence

from .blobs import BlobMissing, BlobStore, blob_key
from .db import Store
from .driver import driver_execute, driver_rows, raw_reader

log = logging.getLogger(__name__)

#: the advisory lock key of the collector (PostgreSQL): "civicblb"
GC_LOCK = 0x6369766963626C62
#: keys per collecting transaction (and per S3 DeleteObjects)
GC_BATCH = 1000


def blob_store_of(session) -> BlobStore | None:
    store = session.info.get("civicmail_store")
    return store.blobs if store is not None else None


# -- writing --------------------------------------------------------------------------------

def current_epoch(store: Store) -> int:
    """The collector's epoch as this process last saw it (read once if never)."""
    if store.blob_epoch is None:
        with raw_reader(store) as r:
            store.blob_epoch = driver_rows(r, "SELECT epoch FROM blob_state WHERE id = 1")[0][0]
    return store.blob_epoch


def stage(store: Store, messages: Sequence) -> None:
    """Before the write transaction: put the bodies of these ``NewMessage``s in the blob store
    (durable on return) and note each one's key and the epoch seen before the put, so that
    ``seal`` inside the transaction has nothing left to write. Without a blob store: nothing."""
    blobs = store.blobs
    if blobs is None:
        return
    epoch = current_epoch(store)
    todo: dict[str, bytes] = {}
    keyed: dict[int, str] = {}
    for m in messages:
        if m.reuse_content_id or m.blob_key:
            continue
        key = keyed.get(id(m.raw))
        if key is None:
            key = keyed[id(m.raw)] = blob_key(m.raw)
            todo[key] = m.raw
        m.blob_key, m.blob_epoch = key, epoch
    blobs.put_many(todo)


def _shared_epoch(session) -> int:
    """Inside a write transaction: the collector's lock on its shared side (PostgreSQL; on
    SQLite the write lock is held already), then the epoch as it is now."""
    if session.get_bind().dialect.name == "postgresql":
        driver_rows(session, f"SELECT pg_advisory_xact_lock_shared({GC_LOCK})")
    return driver_rows(session, "SELECT epoch FROM blob_state WHERE id = 1")[0][0]


def seal(session, items: Sequence[tuple[bytes, str, int | None]]) -> list[str] | None:
    """Inside the write transaction, before the content rows are inserted: (raw, staged key,
    staged epoch) of each new content row -> its blob key; None without a blob store (the
    bytes go into ``content.raw``). Bodies not staged, or staged before a collection that
    ran since, are put here."""
    store = session.info.get("civicmail_store")
    blobs = store.blobs if store is not None else None
    if blobs is None or not items:
        return None
    epoch = _shared_epoch(session)
    todo: dict[str, bytes] = {}
    keys = []
    for raw, key, staged in items:
        if not key:
            key = blob_key(raw)
            todo[key] = raw
        elif staged != epoch:
            todo[key] = raw
        keys.append(key)
    if todo:
        blobs.put_many(todo)
    store.blob_epoch = max(epoch, store.blob_epoch or 0)
    return keys


def release(session, keys: Iterable[str | None]) -> None:
    """Content rows with these blob keys were deleted (caller's transaction): queue the keys
    for the collector, which deletes each blob no other content row names by then."""
    from .mailstore import sqlite_datetime

    gone = sorted({k for k in keys if k})
    if not gone:
        return
    at = dt.datetime.now(dt.timezone.utc)
    if session.get_bind().dialect.name == "sqlite":
        at = sqlite_datetime(at)
    driver_execute(session, "INSERT INTO blob_release (blob_key, at) VALUES (?, ?)", [(k, at) for k in gone])


# -- reading --------------------------------------------------------------------------------

def body(store: Store, raw, key: str | None) -> bytes:
    """A message's bytes from its content row's ``raw`` or ``blob_key``."""
    if raw is not None:
        return bytes(raw)
    if not key:
        return b""
    if store.blobs is None:
        raise BlobMissing(f"body {key} is in a blob store, but blobs.backend is \"database\"")
    return store.blobs.get(key)


def fill(store: Store, rows: list[list], raw_at: int, key_at: int, header_size_at: int | None = None) -> None:
    """Rows (lists) read with ``content.raw`` (or the header: ``header_size_at``) and
    ``content.blob_key``: put the bytes (or the header) from the blob store where ``raw`` is
    NULL, the blobs of all rows fetched side by side."""
    wanted = [row[key_at] for row in rows if row[raw_at] is None and row[key_at]]
    if not wanted:
        return
    if store.blobs is None:
        raise BlobMissing("message bodies are in a blob store, but blobs.backend is \"database\"")
    got = store.blobs.get_many(wanted)
    for row in rows:
        if row[raw_at] is None and row[key_at]:
            raw = got[row[key_at]]
            row[raw_at] = raw[:row[header_size_at]] if header_size_at is not None else raw


# -- the collector --------------------------------------------------------------------------

def _writing(store: Store):
    from .mailbox_sql import writing

    return writing(store)


def _collect(store: Store, keys: list[str], release_ids: Sequence[int] = ()) -> int:
    """Under the collector's lock: raise the epoch, delete the blobs among ``keys`` no content
    row names, and the ``blob_release`` rows ``release_ids``. Returns the blobs deleted."""
    blobs = store.blobs
    assert blobs is not None

    def decide(s) -> list[str]:
        driver_rows(s, "UPDATE blob_state SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch")
        named: set[str] = set()
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            named.update(k for (k,) in driver_rows(
                s, f"SELECT DISTINCT blob_key FROM content WHERE blob_key IN ({', '.join('?' * len(part))})", *part))
        ids = list(release_ids)
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            driver_execute(s, f"DELETE FROM blob_release WHERE id IN ({', '.join('?' * len(part))})", [tuple(part)])
        return sorted(set(keys) - named)

    if store.dialect == "postgresql":
        # The lock on a connection of its own, held until the blobs are gone: writers that come
        # after the commit below wait for it, and see the raised epoch.
        holder = store.engine.raw_connection()
        try:
            cur = holder.cursor()
            cur.execute(f"SELECT pg_advisory_xact_lock({GC_LOCK})")
            with store.session() as s:
                dead = decide(s)
            blobs.delete_many(dead)
        finally:
            holder.rollback()
            holder.close()
    else:
        with _writing(store) as s:
            dead = decide(s)
            blobs.delete_many(dead)
    return len(dead)


def collect_released(store: Store, batch: int = GC_BATCH) -> int:
    """Delete the blobs whose last content row went (``blob_release``) and that no content row
    names now. Returns how many were deleted."""
    if store.blobs is None:
        return 0
    deleted = 0
    while True:
        with raw_reader(store) as r:
            rows = driver_rows(r, "SELECT id, blob_key FROM blob_release ORDER BY id LIMIT ?", batch)
        if not rows:
            return deleted
        deleted += _collect(store, sorted({k for _, k in rows}), [i for i, _ in rows])
        if len(rows) < batch:
            return deleted


def collect_orphans(store: Store, grace_seconds: float, batch: int = GC_BATCH) -> tuple[int, int]:
    """Sweep the blob store: delete the blobs older than the grace period that no content row
    names (a write that never committed, a release lost). Returns (blobs looked at, deleted)."""
    blobs = store.blobs
    if blobs is None:
        return 0, 0
    seen = deleted = 0
    chunk: list[str] = []

    def flush() -> int:
        # the cheap read first, without the lock; only blobs that look unnamed are locked for
        with raw_reader(store) as r:
            named: set[str] = set()
            for i in range(0, len(chunk), 900):
                part = chunk[i:i + 900]
                named.update(k for (k,) in driver_rows(
                    r, f"SELECT DISTINCT blob_key FROM content WHERE blob_key IN ({', '.join('?' * len(part))})",
                    *part))
        unnamed = [k for k in chunk if k not in named]
        return _collect(store, unnamed) if unnamed else 0

    for key in blobs.keys_older_than(time.time() - grace_seconds):
        seen += 1
        chunk.append(key)
        if len(chunk) >= batch:
            deleted += flush()
            chunk = []
    if chunk:
        deleted += flush()
    return seen, deleted


def collect(store: Store, grace_seconds: float) -> dict[str, int]:
    """One full collection: released blobs, then the sweep for orphans."""
    released = collect_released(store)
    seen, orphans = collect_orphans(store, grace_seconds)
    return {"released": released, "swept": seen, "orphans": orphans}


# -- moving bodies out of the database ------------------------------------------------------

def bodies_in_database(store: Store) -> int:
    with raw_reader(store) as r:
        return driver_rows(r, "SELECT count(*) FROM content WHERE raw IS NOT NULL")[0][0]


def migrate_bodies(store: Store, batch: int = 500, limit: int | None = None,
                   progress: Callable[[int], None] | None = None) -> int:
    """Move bodies still in ``content.raw`` to the blob store, ``batch`` rows a transaction,
    in id order; resumable (what is moved is no longer NULL-keyed), and safe while serve runs:
    a reader sees either the row's bytes or its key, and the blob is durable before the key is
    committed. Returns the bodies moved (at most ``limit``)."""
    blobs = store.blobs
    if blobs is None:
        raise ValueError("blobs.backend is \"database\": there is no blob store to move bodies to")
    last = moved = 0
    while limit is None or moved < limit:
        size = batch if limit is None else min(batch, limit - moved)
        with raw_reader(store) as r:
            rows = [(cid, bytes(raw)) for cid, raw in driver_rows(
                r, "SELECT id, raw FROM content WHERE id > ? AND raw IS NOT NULL ORDER BY id LIMIT ?", last, size)]
        if not rows:
            break
        epoch = current_epoch(store)
        keyed = [(cid, raw, blob_key(raw)) for cid, raw in rows]
        blobs.put_many({k: raw for _, raw, k in keyed})
        with _writing(store) as s:
            if _shared_epoch(s) != epoch:
                blobs.put_many({k: raw for _, raw, k in keyed})
            driver_execute(s, "UPDATE content SET blob_key = ?, raw = NULL WHERE id = ? AND raw IS NOT NULL",
                           [(k, cid) for cid, _, k in keyed])
        last = rows[-1][0]
        moved += len(rows)
        if progress is not None:
            progress(len(rows))
    return moved

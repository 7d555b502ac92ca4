"""Message bodies in a content-addressed blob store: a local directory (the default) or
S3-compatible object storage (several nodes). Keys are the SHA-256 of the bytes, in hex.

A put is durable when it returns: a local blob is written to a temporary name, fsynced, renamed
into its fan-out directory and that directory fsynced; a local batch of ``pack_min`` blobs or more
goes into one pack file instead (``LocalBlobs._put_pack``); an S3 PUT is acknowledged once stored.
Blobs are immutable, so a read is checked against its key and may be cached. What references a
blob, and when one may be deleted, is the database's business (``store/bodies.py``): this module
only stores bytes.

Blocking: called from the store's thread executor, like every other store call.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import os
import re
import secrets
import sqlite3
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import ConfigError, StorageError
from ..privatefiles import fsync_dir

#: threads that write (local: fsync) or send (S3) the blobs of one batch side by side: a
#: filesystem journal commits parallel fsyncs together (1.3 ms each in a row, 0.14 ms each 16
#: at a time, on this machine's disk), and an object store answers requests in parallel
PARALLEL = 16
#: a local put of this many blobs or more is made durable by the file system's sync (Linux
#: ``syncfs``) rather than a fsync per file
SYNCFS_BATCH = 8
#: a local put of this many blobs or more is written as one pack file (``blobs.pack_min``; 0:
#: never): one file, one write and one fsync a batch instead of a file, a rename and an inode
#: each (the inode's allocation was most of a delivery batch's blob CPU, see docs/benchmarks.md)
PACK_MIN = 64
#: the local store's index of packed blobs (key -> pack, offset, length), under ROOT/packs/
PACK_INDEX = "index.sqlite3"
#: the pack index's schema (its own, not Alembic's: ``PRAGMA user_version``). 1: a key is its 32
#: raw bytes, stored once (the table is keyed by it, WITHOUT ROWID, and has no other index); a
#: pack counts its indexed blobs (``live``), so that the last one's delete finds it without an
#: index by pack. 0 (before): the key in hex, in the table and again in an index by pack, about
#: three times the bytes an entry; upgraded in place on first use (``_upgrade_index``).
PACK_INDEX_VERSION = 1
_PACK_TABLES = (
    "CREATE TABLE pack (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, made REAL NOT NULL, "
    "size INTEGER NOT NULL, live INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE blob (key BLOB PRIMARY KEY, pack INTEGER NOT NULL, at INTEGER NOT NULL, "
    "size INTEGER NOT NULL) WITHOUT ROWID",
)
#: version 0 -> 1, in one transaction: the live counts from version 0's index by pack, then the
#: entries copied in key order (hex and byte order agree) with their keys as bytes
_PACK_UPGRADE_0 = (
    "ALTER TABLE pack ADD COLUMN live INTEGER NOT NULL DEFAULT 0",
    "UPDATE pack SET live = (SELECT count(*) FROM blob WHERE blob.pack = pack.id)",
    _PACK_TABLES[1].replace("TABLE blob ", "TABLE blob_v1 "),
    "INSERT INTO blob_v1 (key, pack, at, size) SELECT civicmail_unhex(key), pack, at, size FROM blob ORDER BY key",
    "DROP TABLE blob",
    "ALTER TABLE blob_v1 RENAME TO blob",
)
#: a pack's trailer, after its bytes: an entry a blob (its key's 32 bytes, offset, length), then
#: the footer (magic, entries, bytes of blobs before the trailer). The index can be rebuilt from
#: it (``LocalBlobs.reindex``, `civicmail blobs reindex`); reads never use it.
_PACK_ENTRY = struct.Struct("<32sQQ")
_PACK_FOOTER = struct.Struct("<8sQQ")
_PACK_MAGIC = b"CMPACK01"
#: seconds after which a temporary file of a local write is taken as abandoned (its writer died)
TMP_MAX_AGE = 3600.0
#: bytes of blobs a process keeps in memory for repeated reads (FETCH BODY.PEEK[HEADER] then
#: BODY[] of one message, the portal showing a notice it listed)
CACHE_BYTES = 32 * 1024 * 1024
#: blobs larger than this are never cached (a 30 MB attachment must not empty the cache)
CACHE_ITEM_BYTES = 1024 * 1024


def _load_syncfs():
    """``syncfs(2)`` of the file system holding a path (Linux; None elsewhere): every dirty page
    and the journal of that one file system, waited for, its write-back errors reported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if call(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
        finally:
            os.close(fd)

    return syncfs


_syncfs = _load_syncfs()


class BlobMissing(StorageError):
    """A blob the database refers to is not in the blob store."""


def blob_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


#: a blob key as ``blob_key`` makes it (a regular expression: a tenth of a check per character)
_is_key = re.compile(r"[0-9a-f]{64}").fullmatch


def _key_bytes(key: str) -> bytes:
    """A key as the pack index keeps it: its 32 bytes (StorageError unless ``blob_key`` made it)."""
    if not _is_key(key):
        raise StorageError(f"not a blob key: {key!r}")
    return bytes.fromhex(key)


def _upgrade_index(conn: sqlite3.Connection, where: str) -> None:
    """Bring a pack index to ``PACK_INDEX_VERSION``: make its tables (a new index), or upgrade
    version 0's, in one transaction under the write lock (another process that got there first
    leaves nothing to do). A crash in the middle leaves version 0 whole."""
    conn.create_function("civicmail_unhex", 1, bytes.fromhex, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > PACK_INDEX_VERSION:
            raise StorageError(f"{where} is version {version} of the pack index, made by a newer civicmail "
                               f"(this one knows up to {PACK_INDEX_VERSION})")
        if version < PACK_INDEX_VERSION:
            made = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob'").fetchone()
            for sql in _PACK_UPGRADE_0 if made else _PACK_TABLES:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {PACK_INDEX_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _Cache:
    """An LRU of blobs, bounded in bytes; thread-safe. Blobs never change, so nothing is stale."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            raw = self._items.get(key)
            if raw is not None:
                self._items.move_to_end(key)
            return raw

    def put(self, key: str, raw: bytes) -> None:
        if len(raw) > CACHE_ITEM_BYTES or len(raw) > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = raw
            self.size += len(raw)
            while self.size > self.limit:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)

    def drop(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                raw = self._items.pop(key, None)
                if raw is not None:
                    self.size -= len(raw)


class BlobStore:
    """What both backends do. ``put_many`` is durable on return; ``get`` raises BlobMissing."""

    #: "local" or "s3", for `civicmail check` and the logs
    backend = ""

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self._cache = _Cache(cache_bytes)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- what the store calls ------------------------------------------------------------
    def put_many(self, blobs: Mapping[str, bytes]) -> None:
        """Store these blobs (key -> bytes); on return each is durable. A blob already stored
        is not written again (content addressing: same key, same bytes)."""
        self._each(self._put_one, list(blobs.items()))

    def get(self, key: str) -> bytes:
        raw = self._cache.get(key)
        if raw is not None:
            return raw
        raw = self._read(key)
        if blob_key(raw) != key:
            raise StorageError(f"blob {key} is damaged (its bytes do not hash to its key)")
        self._cache.put(key, raw)
        return raw

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """``get`` of several blobs, fetched side by side (FETCH BODY[] of a range on S3)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, bytes] = {}
        for key in wanted:
            raw = self._cache.get(key)
            if raw is not None:
                out[key] = raw
        missing = [(k,) for k in wanted if k not in out]
        found: dict[str, bytes] = {}
        self._each(lambda k: found.__setitem__(k, self.get(k)), missing)
        out.update(found)
        return out

    def delete_many(self, keys: list[str]) -> None:
        self._cache.drop(keys)
        self._delete(keys)

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def ping(self) -> None:
        """Raise if the store cannot be reached (`civicmail check`)."""
        raise NotImplementedError

    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        """Keys of the blobs written before ``cutoff`` (seconds since the epoch): GC's sweep of
        orphans. Also removes leftovers of writes that never finished (local temporary files)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- for the backends --------------------------------------------------------------------
    def _each(self, fn, items: list) -> None:
        if len(items) <= 1:
            for item in items:
                fn(*item)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="blobs")
        for _ in self._pool.map(lambda item: fn(*item), items):
            pass

    def _put_one(self, key: str, raw: bytes) -> None:
        raise NotImplementedError

    def _read(self, key: str) -> bytes:
        raise NotImplementedError

    def _delete(self, keys: list[str]) -> None:
        raise NotImplementedError


class LocalBlobs(BlobStore):
    """Blobs as files ``ROOT/ab/cd/abcd...`` (two levels of 256 directories: a billion blobs
    are ~15,000 files a directory), private to the service user (files 0600, directories
    0700). Written under ``ROOT/tmp/`` first (same file system), fsynced, renamed into place,
    then the directory fsynced (and its parent, when the directory is new); a batch of
    ``SYNCFS_BATCH`` or more is made durable with two ``syncfs`` calls instead (``_put_batch``).

    A batch of ``pack_min`` blobs or more (a delivery batch, a migration batch) is one pack file,
    ``ROOT/packs/NAME.pack``: the bytes one after another, fsynced with its directory, then
    indexed (key -> pack, offset, length) in ``ROOT/packs/index.sqlite3`` (SQLite, WAL,
    synchronous=FULL; shared by every process of the node) before the put returns. A crash
    before the index commit leaves a pack the index does not name, which the sweep removes
    (``keys_older_than``); a read finds a loose file first, then the index. A pack is removed
    when the last of its blobs is deleted (no compaction: a pack with one live blob keeps its
    whole file; delivery batches are released together as their notices expire)."""

    backend = "local"

    def __init__(self, root: Path, cache_bytes: int = CACHE_BYTES, sync: str = "batch",
                 pack_min: int = PACK_MIN) -> None:
        super().__init__(cache_bytes)
        self.root = Path(root)
        #: "batch": a batch made durable by syncfs; "file": every blob by its own fsync
        self.batch_sync = sync == "batch" and _syncfs is not None
        #: batches of this many blobs or more go into a pack (0: none does)
        self.pack_min = pack_min
        self.tmp = self.root / "tmp"
        self.packs = self.root / "packs"
        for d in (self.root, self.tmp, self.packs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        # A batch's names as plain strings: pathlib's objects cost more than the syscalls did
        self._root_str, self._tmp_str, self._packs_str = str(self.root), str(self.tmp), str(self.packs)
        self._index_str = f"{self._packs_str}/{PACK_INDEX}"
        #: the index's connection of each thread (sqlite3 objects are not shared between threads),
        #: per process: a forked child opens its own
        self._local = threading.local()
        self._conns: list[tuple[int, sqlite3.Connection]] = []
        #: the fan-out directories ("abcd" of ROOT/ab/cd) known to exist: nothing removes one, so
        #: a batch neither looks for nor makes them again (at most 65,536 short strings)
        self._leaves: set[str] = set()
        #: temporary names: unique per process (a forked child has its own pid) and per write,
        #: without a random draw each (os.urandom was a tenth of a batch's CPU)
        self._tmp_tag, self._tmp_seq = secrets.token_hex(4), itertools.count()
        #: the index connections' page cache (KiB) and WAL checkpoint threshold (pages), set
        #: before the first use; None: SQLite's defaults (2 MiB, 1000 pages). A bulk writer (a
        #: drop's) raises both: its keys are random, so every batch rewrites pages all over the index
        self.index_cache_kib: int | None = None
        self.index_checkpoint_pages: int | None = None

    def path(self, key: str) -> Path:
        return Path(self._final(key))

    def _final(self, key: str) -> str:
        """Where the blob of ``key`` lies, ROOT/ab/cd/KEY, as a string (a batch's form)."""
        if not _is_key(key):
            raise StorageError(f"not a blob key: {key!r}")
        return f"{self._root_str}/{key[:2]}/{key[2:4]}/{key}"

    def _tmp_name(self, key: str, pid: int | None = None) -> str:
        return f"{self._tmp_str}/{key}.{pid or os.getpid()}.{self._tmp_tag}.{next(self._tmp_seq)}"

    def exists(self, key: str) -> bool:
        return self.path(key).exists() or self._locate(key) is not None

    def ping(self) -> None:
        for d in (self.tmp, self.packs):
            if not os.access(d, os.W_OK):
                raise StorageError(f"{d} is not writable")
        if os.path.exists(self._index_str):
            self._index().execute("SELECT count(*) FROM pack").fetchone()

    def close(self) -> None:
        super().close()
        pid = os.getpid()
        for owner, conn in self._conns:
            if owner == pid:  # a forked child leaves its parent's connections alone
                conn.close()
        self._conns.clear()
        self._local = threading.local()

    # -- the pack index ------------------------------------------------------------------------
    def _index(self) -> sqlite3.Connection:
        """This thread's connection to the pack index (made, with its tables, on first use)."""
        local, pid = self._local, os.getpid()
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == pid:
            return conn
        if not os.path.exists(self._index_str):
            os.close(os.open(self._index_str, os.O_WRONLY | os.O_CREAT, 0o600))  # private, as SQLite's -wal/-shm
        conn = sqlite3.connect(self._index_str, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if self.index_cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(self.index_cache_kib)}")
        if self.index_checkpoint_pages is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(self.index_checkpoint_pages)}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != PACK_INDEX_VERSION:
            _upgrade_index(conn, self._index_str)
        local.conn, local.pid = conn, pid
        self._conns.append((pid, conn))
        return conn

    def checkpoint(self) -> None:
        """The pack index's WAL copied into its file now (a bulk writer that raised
        ``index_checkpoint_pages``, once it is done), not by whoever writes next."""
        if not self._no_index():
            self._index().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _no_index(self) -> bool:
        """True while no pack was ever written here (and so no index made): reads and deletes
        of loose blobs make none."""
        return getattr(self._local, "conn", None) is None and not os.path.exists(self._index_str)

    def _locate(self, key: str) -> tuple[str, int, int] | None:
        """(pack file name, offset, length) of a packed blob; None if the index has no such key."""
        if self._no_index():
            return None
        return self._index().execute(
            "SELECT pack.name, blob.at, blob.size FROM blob JOIN pack ON pack.id = blob.pack WHERE blob.key = ?",
            (_key_bytes(key),)).fetchone()

    def _put_pack(self, blobs: Mapping[str, bytes]) -> None:
        """A batch as one pack file: written from one buffer, fsynced with its directory, then
        its blobs indexed in one transaction. A key the index has already keeps its first place
        (its bytes here are dead space; a pack no key ended up naming is removed at once)."""
        rows, at = [], 0
        for key, raw in blobs.items():
            rows.append((_key_bytes(key), at, len(raw)))
            at += len(raw)
        name = f"{time.time_ns():x}-{os.getpid()}-{self._tmp_tag}-{next(self._tmp_seq)}.pack"
        path = f"{self._packs_str}/{name}"
        trailer = b"".join(_PACK_ENTRY.pack(key, at, size) for key, at, size in rows)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(b"".join((*blobs.values(), trailer, _PACK_FOOTER.pack(_PACK_MAGIC, len(rows), at))))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.packs)  # its name: the index must never name a pack a crash could lose
        if not self._index_pack(name, time.time(), at, rows):  # (an error leaves it unnamed: the sweep removes it)
            os.unlink(path)

    def _index_pack(self, name: str, made: float, size: int, rows: list[tuple[bytes, int, int]]) -> int:
        """One transaction: a pack and its blobs (key's 32 bytes, offset, length) into the index,
        where a key there already keeps its place. Returns the blobs indexed; a pack with none is
        left out of the index."""
        conn = self._index()
        conn.execute("BEGIN IMMEDIATE")
        try:
            pack = conn.execute("INSERT INTO pack (name, made, size, live) VALUES (?, ?, ?, ?)",
                                (name, made, size, len(rows))).lastrowid
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO blob (key, pack, at, size) VALUES (?, ?, ?, ?)",
                             [(key, pack, at, length) for key, at, length in rows])
            added = conn.total_changes - before
            if not added:
                conn.execute("DELETE FROM pack WHERE id = ?", (pack,))
            elif added != len(rows):
                conn.execute("UPDATE pack SET live = ? WHERE id = ?", (added, pack))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return added

    def reindex(self) -> tuple[int, int]:
        """Index again the packs the index does not name, from their trailers (a lost or damaged
        index.sqlite3, moved aside first): each blob whose bytes hash to its key. A pack cut short
        by a crash has no whole trailer, and a pack whose keys are all indexed elsewhere adds
        nothing: both are left to the sweep. Returns (packs, blobs) indexed."""
        conn = self._index()
        packs = blobs = 0
        for entry in sorted(os.scandir(self.packs), key=lambda e: e.name):
            if not entry.name.endswith(".pack") or conn.execute(
                    "SELECT 1 FROM pack WHERE name = ?", (entry.name,)).fetchone() is not None:
                continue
            with open(entry.path, "rb") as fh:
                data = fh.read()
            if len(data) < _PACK_FOOTER.size:
                continue
            magic, count, size = _PACK_FOOTER.unpack_from(data, len(data) - _PACK_FOOTER.size)
            if magic != _PACK_MAGIC or len(data) != size + count * _PACK_ENTRY.size + _PACK_FOOTER.size:
                continue
            rows = []
            for i in range(count):
                key, at, length = _PACK_ENTRY.unpack_from(data, size + i * _PACK_ENTRY.size)
                if at + length <= size and hashlib.sha256(data[at:at + length]).digest() == key:
                    rows.append((key, at, length))
            added = self._index_pack(entry.name, entry.stat().st_mtime, size, rows)
            packs, blobs = packs + bool(added), blobs + added
        return packs, blobs

    def pack_usage(self) -> tuple[int, int, int, int]:
        """(packs, blobs in them, bytes of those blobs, bytes of the pack files): the difference
        of the last two is what deleted blobs left in packs still in use (``blobs status``)."""
        if self._no_index():
            return 0, 0, 0, 0
        conn = self._index()
        packs, total = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM pack").fetchone()
        blobs, live = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blob").fetchone()
        return packs, blobs, live, total

    def _read_packed(self, key: str) -> bytes | None:
        hit = self._locate(key)
        if hit is None:
            return None
        name, at, size = hit
        try:
            fd = os.open(f"{self._packs_str}/{name}", os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            raw = os.pread(fd, size, at)
        finally:
            os.close(fd)
        if len(raw) != size:
            raise StorageError(f"blob {key} is damaged (its pack {name} is cut short)")
        return raw

    def _delete_packed(self, keys: list[str]) -> None:
        """Unindex these keys; remove each pack left naming none (index first: a crash between
        leaves a pack file the index does not name, which the sweep removes)."""
        if self._no_index():
            return
        conn = self._index()
        raw_keys = [_key_bytes(k) for k in keys]
        gone: list[str] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            dropped: collections.Counter[int] = collections.Counter()
            for i in range(0, len(raw_keys), 500):
                part = raw_keys[i:i + 500]
                marks = ", ".join("?" * len(part))
                dropped.update(p for (p,) in conn.execute(f"SELECT pack FROM blob WHERE key IN ({marks})", part))
                conn.execute(f"DELETE FROM blob WHERE key IN ({marks})", part)
            for pack, n in sorted(dropped.items()):
                hit = conn.execute("UPDATE pack SET live = live - ? WHERE id = ? RETURNING name, live",
                                   (n, pack)).fetchone()
                if hit is not None and hit[1] <= 0:
                    gone.append(hit[0])
                    conn.execute("DELETE FROM pack WHERE id = ?", (pack,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for name in gone:
            try:
                os.unlink(f"{self._packs_str}/{name}")
            except FileNotFoundError:
                pass
        if gone:
            fsync_dir(self.packs)

    def _packed_older_than(self, cutoff: float, stale: float) -> Iterator[str]:
        """Keys of the blobs in packs made before ``cutoff``, a page at a time (no read
        transaction held while the caller deletes); first, pack files the index does not name
        older than ``stale`` (a crash before their index commit, or after their last blob's).
        Without an index, packs are never taken as unnamed: StorageError (`blobs reindex`)."""
        if self._no_index() and any(e.name.endswith(".pack") for e in os.scandir(self.packs)):
            raise StorageError(f"{self._index_str} is missing but {self.packs} holds packs: the sweep would take "
                               "every packed body for an orphan; run `civicmail blobs reindex` first")
        for entry in os.scandir(self.packs):
            if not entry.name.endswith(".pack"):
                continue
            try:
                if entry.stat().st_mtime >= stale:
                    continue
            except FileNotFoundError:
                continue
            if self._index().execute("SELECT 1 FROM pack WHERE name = ?", (entry.name,)).fetchone() is None:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        if self._no_index():
            return
        last = b""
        while True:
            page = [k for (k,) in self._index().execute(
                "SELECT blob.key FROM blob JOIN pack ON pack.id = blob.pack WHERE blob.key > ? AND pack.made < ? "
                "ORDER BY blob.key LIMIT 1000", (last, cutoff))]
            yield from (k.hex() for k in page)
            if len(page) < 1000:
                return
            last = page[-1]

    def put_many(self, blobs: Mapping[str, bytes]) -> None:
        if self.pack_min and len(blobs) >= self.pack_min:
            self._put_pack(blobs)
            return
        if len(blobs) >= SYNCFS_BATCH and self.batch_sync:
            self._put_batch(blobs)
            return
        # A file already there under its key is the same bytes, unless a crash cut it short
        todo = [(k, raw) for k, raw in blobs.items() if not self._stored(k, len(raw))]
        dirs: set[Path] = set()
        self._each(lambda k, raw: dirs.update(self._write(k, raw)), todo)
        for d in sorted(dirs, key=lambda p: len(p.parts)):  # a new directory's entry is in its parent
            fsync_dir(d)

    def _stored(self, key: str, size: int) -> bool:
        try:
            return self.path(key).stat().st_size == size
        except FileNotFoundError:
            return False

    def _dirs_for(self, final: Path) -> set[Path]:
        """Make the fan-out directories of ``final``; the directories whose entries changed."""
        changed = {final.parent}
        if not final.parent.is_dir():
            for d in (final.parent.parent, final.parent):
                try:
                    d.mkdir(mode=0o700)
                except FileExistsError:
                    continue
                changed.add(d.parent)
        return changed

    def _write_tmp(self, key: str, raw: bytes, sync: bool, pid: int | None = None) -> str:
        tmp = self._tmp_name(key, pid)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _write(self, key: str, raw: bytes) -> set[Path]:
        """One blob: written, fsynced, renamed into place; the directories to fsync after."""
        final = self.path(key)
        dirs = self._dirs_for(final)
        os.replace(self._write_tmp(key, raw, True), final)
        return dirs

    def _put_batch(self, blobs: Mapping[str, bytes]) -> None:
        """Many blobs: every temporary file written, one ``syncfs`` (their bytes on disk), every
        rename, a second ``syncfs`` (the names and the new directories). A fsync per file costs
        a journal commit each (1.4 ms a blob here, 16 at a time, on a loaded machine; 0.1 ms this
        way). A crash before the second leaves whole files under their keys or none. A blob is
        looked for only in a directory that was there (a new one holds nothing yet)."""
        moves, pid = [], os.getpid()
        for key, raw in blobs.items():
            final = self._final(key)
            if not self._new_leaf(key):
                try:
                    if os.stat(final).st_size == len(raw):  # the same bytes, unless a crash cut them short
                        continue
                except FileNotFoundError:
                    pass
            moves.append((self._write_tmp(key, raw, False, pid), final))
        if not moves:
            return
        _syncfs(self.root)
        for tmp, final in moves:
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # its directory went (a restore, by hand): made again
                self._leaves.clear()
                os.makedirs(os.path.dirname(final), 0o700, exist_ok=True)
                os.replace(tmp, final)
        _syncfs(self.root)

    def _new_leaf(self, key: str) -> bool:
        """Make the fan-out directories of ``key`` unless known to exist; True if the leaf is new
        (made here: no blob can be in it yet)."""
        leaf = key[:4]
        if leaf in self._leaves:
            return False
        top = f"{self._root_str}/{key[:2]}"
        new = True
        try:
            os.mkdir(f"{top}/{key[2:4]}", 0o700)
        except FileExistsError:
            new = False
        except FileNotFoundError:  # the top directory is new too
            try:
                os.mkdir(top, 0o700)
            except FileExistsError:
                pass
            try:
                os.mkdir(f"{top}/{key[2:4]}", 0o700)
            except FileExistsError:  # another writer made it meanwhile, and may have put a blob there
                new = False
        self._leaves.add(leaf)
        return new

    def _read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            pass
        raw = self._read_packed(key)
        if raw is None:
            raise BlobMissing(f"blob {key} is not in the blob store") from None
        return raw

    def _delete(self, keys: list[str]) -> None:
        self._delete_packed(keys)
        dirs = set()
        for key in keys:
            p = self.path(key)
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            dirs.add(p.parent)
        for d in dirs:
            fsync_dir(d)

    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        # a killed writer's temporary file; never one a live write may still rename, whatever
        # the grace period (a write takes milliseconds)
        stale = min(cutoff, time.time() - TMP_MAX_AGE)
        for entry in os.scandir(self.tmp):
            try:
                if entry.stat().st_mtime < stale:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
        yield from self._packed_older_than(cutoff, stale)
        for top in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(top.name) != 2 or not top.is_dir():
                continue
            for mid in sorted(os.scandir(top.path), key=lambda e: e.name):
                for entry in os.scandir(mid.path):
                    try:
                        if len(entry.name) == 64 and entry.stat().st_mtime < cutoff:
                            yield entry.name
                    except FileNotFoundError:
                        pass

    def describe(self) -> str:
        return f"local directory {self.root}"


class S3Blobs(BlobStore):
    """Blobs as objects ``PREFIX/ab/cd/abcd...`` in one bucket of an S3-compatible object store,
    through boto3. A PUT carries the blob's SHA-256 (``ChecksumSHA256``): the store refuses bytes
    damaged on the way. Credentials: the configured ones, else boto3's own chain (environment,
    shared files, instance role)."""

    backend = "s3"

    def __init__(self, bucket: str, endpoint: str = "", region: str = "", prefix: str = "",
                 access_key: str = "", secret_key: str = "", cache_bytes: int = CACHE_BYTES,
                 timeout: float = 30.0) -> None:
        super().__init__(cache_bytes)
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.endpoint = endpoint
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        creds = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key} if access_key else {}
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint or None, region_name=region or None,
            config=BotoConfig(max_pool_connections=PARALLEL * 2, connect_timeout=timeout, read_timeout=timeout,
                              retries={"max_attempts": 3, "mode": "standard"}), **creds)
        from botocore.exceptions import ClientError

        self._client_error = ClientError

    def name(self, key: str) -> str:
        if len(key) != 64:
            raise StorageError(f"not a blob key: {key!r}")
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.name(key))
            return True
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def _put_one(self, key: str, raw: bytes) -> None:
        import base64

        digest = base64.b64encode(bytes.fromhex(key)).decode()
        self.client.put_object(Bucket=self.bucket, Key=self.name(key), Body=raw, ChecksumSHA256=digest)

    def _read(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.name(key))["Body"].read()
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise BlobMissing(f"blob {key} is not in the blob store") from None
            raise

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
            chunk = keys[i:i + 1000]
            out = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self.name(k)} for k in chunk], "Quiet": True})
            if out.get("Errors"):
                raise StorageError(f"deleting {len(out['Errors'])} blob(s) failed: {out['Errors'][0].get('Code')}")

    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                name = obj["Key"].rsplit("/", 1)[-1]
                if len(name) == 64 and obj["LastModified"].timestamp() < cutoff:
                    yield name

    def describe(self) -> str:
        where = self.endpoint or "AWS"
        return f"S3 bucket {self.bucket!r} at {where}" + (f", prefix {self.prefix!r}" if self.prefix else "")


def open_blobs(config) -> BlobStore | None:
    """The blob store ``[blobs]`` configures; None for ``backend = "database"`` (bodies kept in
    the ``content`` table, as before migration 0017)."""
    b = config.blobs
    backend = config.blobs_backend
    if backend == "database":
        return None
    if backend == "local":
        return LocalBlobs(config.data_dir / (b.dir or "blobs"), b.cache_mb * 1024 * 1024, b.sync, b.pack_min)
    if backend == "s3":
        if not b.bucket:
            raise ConfigError("blobs.bucket: the S3 backend needs a bucket")
        secret = os.environ.get(b.secret_key_env, "") if b.secret_key_env else ""
        if b.access_key and not secret:
            raise ConfigError(f"blobs.secret_key_env: the secret of blobs.access_key is not in the environment "
                              f"variable {b.secret_key_env or '(none named)'}")
        return S3Blobs(b.bucket, b.endpoint, b.region, b.prefix, b.access_key, secret, b.cache_mb * 1024 * 1024)
    raise ConfigError(f"blobs.backend: {backend!r} is not one of \"local\", \"s3\", \"database\"")


"""Packs of the local blob store (issue 13, the blob stage): a batch of ``blobs.pack_min`` bodies
or more is one file, indexed in packs/index.sqlite3. Over the real file system, real SMTP and
IMAP and both engines: IMAP FETCH returns a packed body's exact bytes; a pack is removed once
its last blob is released; a writer killed in the middle of a pack loses no acknowledged
message, and the sweep removes the pack it left."""
from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailserver.errors import StorageError
from mailserver.store import bodies
from mailserver.store.blobs import TMP_MAX_AGE, BlobMissing, LocalBlobs, blob_key
from mailserver.store.mailstore import NewMessage, insert_messages
from tests.test_blobs import REPO, _bodies_in_the_database, _blob_files, _imap, _message, _rows, _send, city  # noqa: F401
from tests.test_cli import civicmail


def _packs(root: Path) -> list[Path]:
    return sorted((root / "packs").glob("*.pack"))


def _indexed(root: Path) -> int:
    with sqlite3.connect(root / "packs" / "index.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM blob").fetchone()[0]


def _fetch_all(server, box: str = "INBOX") -> list[bytes]:
    c = _imap(server, server.people.alice)
    try:
        c.select(box, readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        c.logout()


def test_a_batch_is_one_pack_read_back_and_removed_with_its_last_blob(tmp_path):
    root = tmp_path / "blobs"
    blobs = LocalBlobs(root, pack_min=8)
    many = {blob_key(r): r for r in (_message(n, 600) for n in range(30))}
    blobs.put_many(many)
    [pack] = _packs(root)
    assert _blob_files(root) == [] and list((root / "tmp").iterdir()) == []  # no file, no rename a blob
    assert stat.S_IMODE(pack.stat().st_mode) == 0o600 and stat.S_IMODE((root / "packs").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "packs" / "index.sqlite3").stat().st_mode) == 0o600
    assert pack.stat().st_size == sum(map(len, many.values())) + 30 * 48 + 24  # the bytes, then the trailer
    fresh = LocalBlobs(root)  # no cache: from the pack
    assert fresh.get_many(list(many)) == many and all(fresh.exists(k) for k in many)

    # a damaged pack is refused on read, not served
    first = sorted(many)[0]
    data = pack.read_bytes()
    pack.write_bytes(b"X" + data[1:])
    with pytest.raises(Exception, match="damaged"):
        LocalBlobs(root).get(next(k for k in many if data.startswith(many[k])))
    pack.write_bytes(data)

    # the same batch again: every key keeps its first place, and the new pack naming none goes
    blobs.put_many(many)
    assert _packs(root) == [pack]
    # half old, half new: a second pack, naming the new ones only
    newer = {blob_key(r): r for r in (_message(n, 600) for n in range(30, 45))}
    half = dict(list(many.items())[:15]) | newer
    blobs.put_many(half)
    assert len(_packs(root)) == 2 and _indexed(root) == 45
    size = sum(map(len, many.values()))
    assert blobs.pack_usage() == (2, 45, size + sum(map(len, newer.values())), size + sum(map(len, half.values())))

    # deleting some of a pack's blobs keeps it; deleting the last removes it
    keys = sorted(many)
    blobs.delete_many(keys[:29])
    assert pack.exists() and LocalBlobs(root).get(keys[29]) == many[keys[29]]
    with pytest.raises(BlobMissing):
        LocalBlobs(root).get(first)
    blobs.delete_many([keys[29]])
    assert not pack.exists() and _indexed(root) == 15
    assert LocalBlobs(root).get_many(list(newer)) == newer
    blobs.delete_many(list(newer))
    assert _packs(root) == [] and _indexed(root) == 0

    # blobs.pack_min = 0: a file each, as before packs
    LocalBlobs(root, pack_min=0).put_many(many)
    assert len(_blob_files(root)) == 30 and _packs(root) == []
    blobs.close()


#: the pack index as civicmail wrote it before PACK_INDEX_VERSION 1 (983b988's store/blobs.py,
#: verbatim): keys in hex, in the table and again in an index by pack; no user_version
_INDEX_V0 = """
CREATE TABLE IF NOT EXISTS pack (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, made REAL NOT NULL,
                                 size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blob (key TEXT PRIMARY KEY, pack INTEGER NOT NULL, at INTEGER NOT NULL,
                                 size INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_pack ON blob (pack);
"""


def _index_as_version_0(root: Path) -> dict[str, str]:
    """Replace the pack index of ``root`` by the same entries in version 0's form, written as
    the old code wrote them (its schema, WAL, its inserts); returns key -> pack name."""
    index = root / "packs" / "index.sqlite3"
    with sqlite3.connect(index) as conn:
        packs = conn.execute("SELECT id, name, made, size FROM pack ORDER BY id").fetchall()
        entries = conn.execute("SELECT key, pack, at, size FROM blob").fetchall()
    conn.close()
    for end in ("", "-wal", "-shm"):
        (root / "packs" / f"index.sqlite3{end}").unlink(missing_ok=True)
    conn = sqlite3.connect(index, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_INDEX_V0)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO pack (id, name, made, size) VALUES (?, ?, ?, ?)", packs)
    conn.executemany("INSERT OR IGNORE INTO blob (key, pack, at, size) VALUES (?, ?, ?, ?)",
                     [(key.hex(), pack, at, size) for key, pack, at, size in entries])
    conn.execute("COMMIT")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()
    names = {i: n for i, n, _, _ in packs}
    return {key.hex(): names[pack] for key, pack, _, _ in entries}


def test_an_index_written_before_version_1_is_upgraded_in_place_and_keeps_every_blob(tmp_path):
    """An upgraded node's pack index (hex keys, an index by pack) becomes version 1 on first use:
    every blob reads back, each key is its 32 bytes stored once (no other index), each pack
    counts its blobs, and deletes, the sweep and new packs work on it."""
    root = tmp_path / "blobs"
    writer = LocalBlobs(root, pack_min=8)
    batches = [{blob_key(r): r for r in (_message(b * 100 + n, 500) for n in range(20))} for b in range(3)]
    for batch in batches:
        writer.put_many(batch)
    writer.close()
    where = _index_as_version_0(root)
    every = {k: v for batch in batches for k, v in batch.items()}
    assert len(where) == 60 and len(set(where.values())) == 3

    first, second = LocalBlobs(root), LocalBlobs(root)  # two processes' worth: the second finds it done
    assert first.get_many(list(every)) == every and second.get_many(list(every)) == every
    with sqlite3.connect(root / "packs" / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")] == \
            ["sqlite_autoindex_pack_1"]  # pack.name's; none on blob but its key
        assert conn.execute("SELECT DISTINCT typeof(key), length(key) FROM blob").fetchall() == [("blob", 32)]
        assert sorted(live for (live,) in conn.execute("SELECT live FROM pack")) == [20, 20, 20]
    conn.close()
    assert first.pack_usage()[:3] == (3, 60, sum(map(len, every.values())))

    # a pack goes with its last blob; the others stay
    doomed = list(batches[0])
    first.delete_many(doomed[:19])
    assert len(_packs(root)) == 3
    first.delete_many(doomed[19:])
    assert len(_packs(root)) == 2 and not (root / "packs" / where[doomed[0]]).exists()
    with pytest.raises(BlobMissing):
        LocalBlobs(root).get(doomed[0])
    # the sweep's keys are hex, as the database names them
    assert sorted(first.keys_older_than(time.time() + 1)) == sorted(k for b in batches[1:] for k in b)
    # and a new pack indexes beside the upgraded entries
    newer = {blob_key(r): r for r in (_message(900 + n, 500) for n in range(10))}
    first.put_many(newer)
    assert LocalBlobs(root).get_many(list(newer) + list(batches[2])) == newer | batches[2]
    first.close()
    second.close()


def test_an_index_of_a_newer_version_is_refused(tmp_path):
    root = tmp_path / "blobs"
    blobs = LocalBlobs(root, pack_min=8)
    blobs.put_many({blob_key(r): r for r in (_message(n, 300) for n in range(8))})
    blobs.close()
    with sqlite3.connect(root / "packs" / "index.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(StorageError, match="version 2 of the pack index, made by a newer civicmail"):
        LocalBlobs(root).get(blob_key(_message(0, 300)))


def _stage_and_commit(store, account: int, raws: list[bytes]) -> None:
    """What a delivery batch does: the bodies into the blob store (one pack), then the rows."""
    news = [NewMessage(account_id=account, raw=r) for r in raws]
    bodies.stage(store, news)
    with store.session() as s:
        insert_messages(s, news)


def test_a_bulk_writers_index_settings_apply_to_its_connection_and_its_packs_read_back(tmp_path):
    """A drop's writer raises its pack index connection's page cache and WAL checkpoint
    threshold (delivery/runner.py): they are that connection's, and what it indexed is read back
    by a store with SQLite's defaults (another connection) once each put returned."""
    root = tmp_path / "blobs"
    writer = LocalBlobs(root, pack_min=8)
    writer.index_cache_kib, writer.index_checkpoint_pages = 16 * 1024, 8192
    batches = [{blob_key(r): r for r in (_message(b * 100 + n, 400) for n in range(40))} for b in range(5)]
    for batch in batches:
        writer.put_many(batch)
    conn = writer._index()
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -16 * 1024
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 8192
    assert len(_packs(root)) == 5 and _indexed(root) == 200
    reader = LocalBlobs(root)
    assert reader._index().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # untouched elsewhere
    every = {k: v for batch in batches for k, v in batch.items()}
    assert reader.get_many(list(every)) == every
    writer.close()
    reader.close()


def test_imap_fetch_of_packed_bodies_and_a_pack_removed_once_all_are_released(city):
    server = city(before=lambda config, people: _bodies_in_the_database(config, people, 70))
    store = server.store
    root = server.config.data_dir / "blobs"
    assert bodies.migrate_bodies(store, batch=100) == 70  # `blobs migrate`: one batch, one pack
    [pack] = _packs(root)
    assert _blob_files(root) == []
    done = civicmail("-c", str(server.config.source), "--set", f'store.url="{server.config.store_url}"', "--set",
                     'blobs.backend="local"', "blobs", "status")
    assert done.returncode == 0 and "packs: 1, holding 70 bodies" in done.stdout, done.stderr
    raws = [_message(n, 400) for n in range(70)]
    assert _fetch_all(server) == raws  # exact bytes, over IMAP
    c = _imap(server, server.people.alice)
    try:
        c.select("INBOX")
        typ, data = c.fetch("70", "(BODY.PEEK[]<100.50>)")  # a part of a packed body
        assert typ == "OK" and data[0][1] == raws[69][100:150], data
        c.store("1:69", "+FLAGS", r"(\Deleted)")
        c.expunge()
        assert bodies.collect_released(store) == 69
        assert pack.exists()  # one blob in it is still named
        typ, data = c.fetch("1", "(BODY[])")
        assert typ == "OK" and data[0][1] == raws[69]
        c.store("1", "+FLAGS", r"(\Deleted)")
        c.expunge()
    finally:
        c.logout()
    assert bodies.collect_released(store) == 1
    assert _packs(root) == [] and _indexed(root) == 0


_CUT_WRITER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from mailserver import config as config_mod
from mailserver.store import bodies, open_store
from mailserver.store.mailstore import NewMessage

config = config_mod.load(config_mod.find_config_path(sys.argv[2]), (f'store.url="{sys.argv[4]}"',
                                                                      'blobs.backend="local"'))
store = open_store(config)
news = [NewMessage(account_id=int(sys.argv[3]), raw=b"Subject: lost %d\r\n\r\nnever acknowledged\r\n" % n)
        for n in range(100)]
real_write = os.write

def cut(fd, data):  # the pack's first half reaches the file, then the process dies
    real_write(fd, bytes(data[:len(data) // 2]))
    os.kill(os.getpid(), signal.SIGKILL)

os.write = cut
bodies.stage(store, news)
"""


def _a_city_with_a_pack(city, count: int):
    """A city whose alice has ``count`` messages delivered as one batch, committed: one pack.
    Returns the server, its blob directory, alice's account id, the messages and the pack."""
    server = city()
    root = server.config.data_dir / "blobs"
    account = _rows(server.store, "SELECT id FROM account WHERE address = :a", a=server.people.alice)[0][0]
    acked = [_message(n, 500) for n in range(count)]
    _stage_and_commit(server.store, account, acked)
    [pack] = _packs(root)
    return server, root, account, acked, pack


def test_a_pack_cut_short_by_a_crash_loses_no_acknowledged_message_and_gc_removes_it(city):
    server, root, account, acked, whole = _a_city_with_a_pack(city, 80)
    store = server.store
    _send(server, server.people.alice, _message(99))  # and one message by SMTP (250: a file of its own)
    proc = subprocess.run([sys.executable, "-c", _CUT_WRITER, str(REPO), str(server.config.source), str(account),
                           server.config.store_url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    [cut] = [p for p in _packs(root) if p != whole]
    whole_size = sum(len(b"Subject: lost %d\r\n\r\nnever acknowledged\r\n" % n) for n in range(100)) + 100 * 48 + 24
    assert 0 < cut.stat().st_size < whole_size  # cut short, and never indexed
    assert _indexed(root) == 80

    got = _fetch_all(server)  # nothing acknowledged is lost
    assert got[:80] == acked and got[80].endswith(_message(99)) and len(got) == 81
    # the sweep leaves a pack the index does not name while a live writer could still index it ...
    assert bodies.collect_orphans(store, grace_seconds=0) == (81, 0)
    assert cut.exists()
    assert store.blobs.reindex() == (0, 0)  # no whole trailer: nothing of it is indexed
    # ... and removes it once that is out of the question
    old = time.time() - TMP_MAX_AGE - 60
    os.utime(cut, (old, old))
    assert bodies.collect_orphans(store, grace_seconds=0) == (81, 0)
    assert _packs(root) == [whole]
    assert _fetch_all(server)[:80] == acked
    assert _rows(store, "SELECT count(*) FROM message") == [(81,)]


def test_a_lost_index_is_rebuilt_from_the_packs_and_the_sweep_waits_for_it(city):
    server, root, _, acked, pack = _a_city_with_a_pack(city, 70)
    store = server.store
    store.blobs.close()  # its connections to the index go with it
    for end in ("", "-wal", "-shm"):
        (root / "packs" / f"index.sqlite3{end}").unlink(missing_ok=True)
    args = ["-c", str(server.config.source), "--set", f'store.url="{server.config.store_url}"', "--set",
            'blobs.backend="local"', "blobs"]
    done = civicmail(*args, "gc", "--grace-minutes", "0")  # every packed body looks unnamed: refused
    assert done.returncode == 1 and "blobs reindex" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert pack.exists()
    done = civicmail(*args, "reindex")
    assert done.returncode == 0 and "indexed 70 bodies from 1 pack(s)" in done.stdout, done.stderr
    assert _fetch_all(server) == acked
    assert bodies.collect_orphans(store, grace_seconds=0) == (70, 0)

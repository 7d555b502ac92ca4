"""Message bodies in the blob store (issue 13 item 2), through real SMTP and IMAP on both engines:
delivery puts the body in the blob store and only its key in the database, FETCH reads it back,
COPY shares it, EXPUNGE then GC deletes it; bodies move out of the database while IMAP reads
them; a process killed between the blob and its commit leaves an orphan, never a message
without a body; and the S3 backend against moto's S3 server, a stand-in for a real one."""
from __future__ import annotations

import imaplib
import os
import signal
import smtplib
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from mailserver.imap.service import make_services as imap_services
from mailserver.smtp.service import make_services as smtp_services
from mailserver.store import bodies, migrate, open_store
from mailserver.store.blobservice import make_services as blob_services
from mailserver.store.blobs import BlobMissing, LocalBlobs, S3Blobs, blob_key
from mailserver.store.mailstore import NewMessage, deliver, insert_messages
from tests.conftest import make_bucket
from tests.serverkit import LoopServer, prepared_city
from tests.smtp.conftest import PASSWORD, PORT_ZERO, People, populate

# "local" on both engines (on PostgreSQL the default is "database": several nodes share it)
LISTENERS = PORT_ZERO + ("imap.listen=127.0.0.1:0", 'blobs.backend="local"', "blobs.gc_interval=0",
                         "blobs.migrate_batch=0")
REPO = Path(__file__).resolve().parent.parent


def _message(n: int, size: int = 3000) -> bytes:
    return (f"From: clerk@gov.example\r\nTo: citizen@hz.example.cn\r\nSubject: notice {n}\r\n"
            f"Message-ID: <blob{n}@gov.example>\r\n\r\n" + f"line {n} of the notice's body\r\n" * (size // 30)).encode()


def _servers(ctx) -> list:
    return smtp_services(ctx) + imap_services(ctx)


@pytest.fixture
def city(tmp_path, store_url):
    """SMTP and IMAP over a city whose bodies go to the local blob store (the default)."""
    running = []

    def start(*overrides: str, data: str = "data", factory=_servers, before=None) -> LoopServer:
        config, people = prepared_city(tmp_path / data, LISTENERS + overrides, populate, store_url)
        if before is not None:
            before(config, people)
        server = LoopServer(config, factory).start()
        server.people = people
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def _send(server: LoopServer, to: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        assert c.sendmail("someone@elsewhere.example", [to], raw) == {}


def _imap(server: LoopServer, address: str) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    c.login(address, PASSWORD)
    return c


def _rows(store, sql: str, **params) -> list:
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def _blob_files(root: Path) -> list[Path]:
    return [p for p in root.glob("??/??/*") if p.is_file()]


def test_local_blobs_are_private_durable_files_checked_on_read(tmp_path):
    blobs = LocalBlobs(tmp_path / "blobs")
    raw = _message(1)
    key = blob_key(raw)
    blobs.put_many({key: raw})
    path = blobs.path(key)
    assert path == tmp_path / "blobs" / key[:2] / key[2:4] / key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "blobs").stat().st_mode) == 0o700
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []  # written under a temporary name, renamed
    assert blobs.get(key) == raw
    other = LocalBlobs(tmp_path / "blobs")  # no cache: a damaged file is refused, not served
    path.write_bytes(raw[:-1] + b"X")
    with pytest.raises(Exception, match="damaged"):
        other.get(key)
    blobs.delete_many([key])
    with pytest.raises(BlobMissing):
        blobs.get(key)
    assert not path.exists()

    # a batch goes through the file system's sync (or a fsync a file): the same files, the same modes
    many = {blob_key(r): r for r in (_message(n) for n in range(20))}
    blobs.put_many(many)
    per_file = {blob_key(r): r for r in (_message(n) for n in range(20, 40))}
    LocalBlobs(tmp_path / "blobs", sync="file").put_many(per_file)
    for k, r in (many | per_file).items():
        assert blobs.path(k).read_bytes() == r and stat.S_IMODE(blobs.path(k).stat().st_mode) == 0o600
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    # a file a crash cut short under its key is written again, not taken as stored
    cut = sorted(many)[0]
    blobs.path(cut).write_bytes(b"")
    LocalBlobs(tmp_path / "blobs").put_many({cut: many[cut]})
    assert blobs.path(cut).read_bytes() == many[cut]
    # the same in a batch (syncfs), by a store that has not seen these directories yet: the cut
    # file is written again, a whole one is left as it is (same file), new ones land beside them
    whole = sorted(many)[1]
    inode = blobs.path(whole).stat().st_ino
    blobs.path(cut).write_bytes(many[cut][:10])
    fresh = {blob_key(r): r for r in (_message(n) for n in range(40, 60))}
    LocalBlobs(tmp_path / "blobs").put_many(fresh | {cut: many[cut], whole: many[whole]})
    assert blobs.path(cut).read_bytes() == many[cut]
    assert blobs.path(whole).stat().st_ino == inode
    assert all(blobs.path(k).read_bytes() == r for k, r in fresh.items())
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_deliver_fetch_copy_expunge_and_gc(city):
    server = city()
    people: People = server.people
    store = server.store
    raw = _message(1)
    _send(server, people.alice, raw)
    [(content_id, in_db, key)] = _rows(store, "SELECT id, raw, blob_key FROM content")
    assert in_db is None  # the database holds the key, the envelope and structure, not the body
    root = server.config.data_dir / "blobs"
    [blob] = _blob_files(root)
    stored = blob.read_bytes()
    assert blob.name == key == blob_key(stored) and stored.endswith(raw)  # Received: prepended

    c = _imap(server, people.alice)
    try:
        c.select("INBOX")
        typ, data = c.uid("FETCH", "1", "(BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)")
        assert typ == "OK"
        assert stored in [part[1] for part in data if isinstance(part, tuple)]
        assert b"Subject: notice 1" in b"".join(part[1] for part in data if isinstance(part, tuple))
        typ, data = c.uid("SEARCH", "HEADER", "Message-ID", "blob1@gov.example")  # the header from the blob
        assert data[0].split() == [b"1"]
        assert c.uid("COPY", "1", "Archive")[0] == "OK"
        # COPY shares the content row: no second blob, no second row
        assert _rows(store, "SELECT id, refcount FROM content") == [(content_id, 2)]
        assert len(_blob_files(root)) == 1
        c.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
        c.expunge()
        assert _rows(store, "SELECT refcount FROM content") == [(1,)]
        assert bodies.collect_released(store) == 0 and blob.exists()  # the copy still needs it
        c.select("Archive")
        typ, data = c.fetch("1", "(BODY[])")
        assert stored in [part[1] for part in data if isinstance(part, tuple)]
        c.store("1", "+FLAGS", r"(\Deleted)")
        c.expunge()
    finally:
        c.logout()
    assert _rows(store, "SELECT count(*) FROM content") == [(0,)]
    assert _rows(store, "SELECT blob_key FROM blob_release") == [(key,)]
    assert blob.exists()  # until the collector's round
    assert bodies.collect_released(store) == 1
    assert not blob.exists() and _rows(store, "SELECT count(*) FROM blob_release") == [(0,)]


def test_a_moved_message_expunged_releases_its_blob(city):
    """MOVE (and RENAME of INBOX) copy the rows and remove the originals: the content's refcount
    must come back to one, or its blob would outlive the message."""
    server = city()
    store = server.store
    _send(server, server.people.alice, _message(7))
    [(key,)] = _rows(store, "SELECT blob_key FROM content")
    c = _imap(server, server.people.alice)
    try:
        c.select("INBOX")
        assert c.uid("MOVE", "1", "Archive")[0] == "OK"
        assert _rows(store, "SELECT refcount FROM content") == [(1,)]
        c.select("Archive")
        c.store("1", "+FLAGS", r"(\Deleted)")
        c.expunge()
    finally:
        c.logout()
    assert _rows(store, "SELECT count(*) FROM content") == [(0,)]
    assert bodies.collect_released(store) == 1 and not store.blobs.exists(key)


def test_append_puts_the_body_in_the_blob_store(city):
    server = city()
    store = server.store
    raw = _message(2).replace(b"\r\n", b"\r\n")
    c = _imap(server, server.people.bob)
    try:
        typ, data = c.append("Drafts", r"(\Draft)", None, raw)
        assert typ == "OK"
        c.select("Drafts")
        typ, data = c.fetch("1", "(BODY[])")
        assert data[0][1] == raw
    finally:
        c.logout()
    assert _rows(store, "SELECT raw, blob_key FROM content") == [(None, blob_key(raw))]
    assert server.store.blobs.get(blob_key(raw)) == raw


def test_a_writer_that_a_collection_overtook_puts_its_blob_again(city):
    """The race content addressing opens: a body staged (put) before the transaction, then a
    collection that finds that blob unnamed and deletes it, then the commit naming it. The writer
    sees the collector's epoch moved and puts the blob again before it commits."""
    server = city()
    store = server.store
    account = _rows(store, "SELECT id FROM account WHERE address = :a", a=server.people.alice)[0][0]
    raw = _message(3)
    news = [NewMessage(account_id=account, raw=raw)]
    bodies.stage(store, news)
    key = news[0].blob_key
    assert store.blobs.exists(key)
    assert bodies.collect_orphans(store, grace_seconds=0) == (1, 1)  # unnamed: gone
    assert not store.blobs.exists(key)
    with store.session() as s:
        insert_messages(s, news)
    assert store.blobs.exists(key)
    c = _imap(server, server.people.alice)
    try:
        c.select("INBOX")
        assert c.fetch("1", "(BODY[])")[1][0][1] == raw
    finally:
        c.logout()


def test_collections_racing_writers_of_the_same_bytes_never_lose_a_body(city):
    """The same bytes delivered again and again (one blob), expunged now and then (released), with
    the collector running all the while with no grace period: every message left has its body."""
    from mailserver.store import mailboxes as mb
    from mailserver.store.models.mail import DELETED

    server = city()
    store = server.store
    account = _rows(store, "SELECT id FROM account WHERE address = :a", a=server.people.alice)[0][0]
    inbox = _rows(store, "SELECT id FROM folder WHERE account_id = :a AND name = 'INBOX'", a=account)[0][0]
    raws = [_message(n, 300) for n in range(3)]
    stop, errors, rounds = threading.Event(), [], [0]

    def collector() -> None:
        try:
            while not stop.is_set():
                bodies.collect(store, 0)
                rounds[0] += 1
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        for n in range(150):
            deliver(store, raws[n % 3], [account])
            if n % 10 == 9:  # expunge all but the newest: their content rows go, their keys are released
                uids = [u for (u,) in _rows(store, "SELECT uid FROM message WHERE folder_id = :f", f=inbox)]
                mb.store_flags(store, account, inbox, [(min(uids), max(uids) - 1)], "+", DELETED, [])
                mb.expunge(store, account, inbox)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert rounds[0] > 0
    left = _rows(store, "SELECT c.blob_key FROM message m JOIN content c ON c.id = m.content_id")
    assert left and all(store.blobs.exists(k) for (k,) in left)
    fresh = LocalBlobs(server.config.data_dir / "blobs")  # no cache: from the disk
    assert {fresh.get(k) for (k,) in left} <= set(raws)


_KILLED_WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from mailserver import config as config_mod
from mailserver.store import bodies, open_store
from mailserver.store.mailstore import NewMessage, insert_messages

config = config_mod.load(config_mod.find_config_path(sys.argv[2]), (f'store.url="{sys.argv[4]}"',
                                                                      'blobs.backend="local"'))
store = open_store(config)
news = [NewMessage(account_id=int(sys.argv[3]), raw=b"Subject: lost\r\n\r\nnever committed\r\n")]
bodies.stage(store, news)  # the blob is durable ...
with store.session() as s:
    insert_messages(s, news)  # ... the rows are written, not committed
    print(news[0].blob_key, flush=True)
    time.sleep(60)  # killed here
"""


def test_a_writer_killed_between_blob_and_commit_leaves_only_an_orphan(city):
    server = city()
    store = server.store
    account = _rows(store, "SELECT id FROM account WHERE address = :a", a=server.people.alice)[0][0]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(REPO), str(server.config.source), str(account),
                             server.config.store_url],
                            stdout=subprocess.PIPE, text=True)
    try:
        key = proc.stdout.readline().strip()
        assert len(key) == 64, "the writer did not get to its commit"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # No message without a body: the rolled-back transaction left no row; the blob is an orphan
    assert _rows(store, "SELECT count(*) FROM message") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM content") == [(0,)]
    assert store.blobs.exists(key)
    assert bodies.collect_orphans(store, grace_seconds=3600) == (0, 0)  # within the grace period: kept
    assert bodies.collect_orphans(store, grace_seconds=0) == (1, 1)
    assert not store.blobs.exists(key)
    # a delivered message's blob is named, so the sweep keeps it
    _send(server, server.people.alice, _message(4))
    assert bodies.collect_orphans(store, grace_seconds=0) == (1, 0)


def test_migrate_moves_bodies_out_while_imap_reads_them(city):
    server = city()
    store = server.store
    account = _rows(store, "SELECT id FROM account WHERE address = :a", a=server.people.alice)[0][0]
    kept_blobs, store.blobs = store.blobs, None  # as before 0017: bodies into content.raw
    raws = [_message(n, 600) for n in range(300)]
    for i in range(0, len(raws), 100):
        with store.session() as s:
            insert_messages(s, [NewMessage(account_id=account, raw=r) for r in raws[i:i + 100]])
    store.blobs = kept_blobs
    assert bodies.bodies_in_database(store) == 300

    stop, seen, errors = threading.Event(), [], []

    def reader() -> None:
        try:
            c = _imap(server, server.people.alice)
            c.select("INBOX", readonly=True)
            while not stop.is_set():
                typ, data = c.fetch("1:*", "(BODY.PEEK[])")
                assert typ == "OK"
                got = [part[1] for part in data if isinstance(part, tuple)]
                assert got == raws
                seen.append(bodies.bodies_in_database(store))
            c.logout()
        except Exception as exc:  # reported in the test thread
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        while not seen and not errors:
            time.sleep(0.01)
        moved = bodies.migrate_bodies(store, batch=20, limit=100)  # stopped part way ...
        assert moved == 100 and bodies.bodies_in_database(store) == 200
        assert bodies.migrate_bodies(store, batch=20) == 200  # ... and resumed
        n = len(seen)
        while len(seen) < n + 2 and not errors:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert seen[0] > 0 and seen[-1] == 0  # reads ran while bodies were in the database and after
    assert bodies.bodies_in_database(store) == 0
    assert _rows(store, "SELECT count(*) FROM content WHERE blob_key IS NULL") == [(0,)]
    assert len(_blob_files(server.config.data_dir / "blobs")) == 300


def _bodies_in_the_database(config, people: People, count: int) -> None:
    """``count`` messages for alice stored as before 0017: bodies in content.raw."""
    store = open_store(config)
    try:
        store.blobs = None
        account = _rows(store, "SELECT id FROM account WHERE address = :a", a=people.alice)[0][0]
        for n in range(count):
            deliver(store, _message(n, 400), [account])
    finally:
        store.dispose()


def _wait_for(what, seconds: float = 60.0) -> None:
    """Poll until ``what()`` is true (background work: no deadline is asserted, only an end)."""
    end = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < end, "gave up waiting"
        time.sleep(0.05)


def test_serve_moves_bodies_out_and_collects_released_blobs_in_the_background(city):
    server = city("blobs.gc_interval=0.2", "blobs.migrate_batch=7",
                  factory=lambda ctx: _servers(ctx) + blob_services(ctx),
                  before=lambda config, people: _bodies_in_the_database(config, people, 30))
    store = server.store
    _wait_for(lambda: bodies.bodies_in_database(store) == 0)
    assert len(_blob_files(server.config.data_dir / "blobs")) == 30
    c = _imap(server, server.people.alice)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        assert [part[1] for part in data if isinstance(part, tuple)] == [_message(n, 400) for n in range(30)]
        c.store("1:10", "+FLAGS", r"(\Deleted)")
        c.expunge()
    finally:
        c.logout()
    _wait_for(lambda: len(_blob_files(server.config.data_dir / "blobs")) == 20)
    assert _rows(store, "SELECT count(*) FROM blob_release") == [(0,)]


def test_the_blobs_commands(city):
    from tests.test_cli import civicmail

    server = city(before=lambda config, people: _bodies_in_the_database(config, people, 30))
    args = ["-c", str(server.config.source), "--set", f'store.url="{server.config.store_url}"', "--set",
            'blobs.backend="local"', "blobs"]
    done = civicmail(*args, "status")
    assert done.returncode == 0, done.stderr
    assert "bodies still in the database: 30" in done.stdout and "local directory" in done.stdout
    done = civicmail(*args, "migrate", "--batch", "4", "--limit", "10")
    assert done.returncode == 0 and "moved 10 bodies to the local blob store; 20 left" in done.stdout, done.stderr
    done = civicmail(*args, "migrate")
    assert done.returncode == 0 and "moved 20 bodies to the local blob store; 0 left" in done.stdout, done.stderr
    orphan = b"Subject: never committed\r\n\r\n"
    server.store.blobs.put_many({blob_key(orphan): orphan})  # as a write that crashed before its commit
    done = civicmail(*args, "gc")
    assert done.returncode == 0 and "deleted 0 orphan(s)" in done.stdout, done.stdout  # in its grace period
    done = civicmail(*args, "gc", "--grace-minutes", "0")
    assert done.returncode == 0, done.stderr
    assert "swept 31 blob(s) older than 0 min, deleted 1 orphan(s)" in done.stdout, done.stdout
    assert len(_blob_files(server.config.data_dir / "blobs")) == 30
    done = civicmail("-c", str(server.config.source), "--set", 'blobs.backend="database"', "--set",
                     f'store.url="{server.config.store_url}"', "blobs", "gc")
    assert done.returncode == 1 and "there is no blob store" in done.stderr and "Traceback" not in done.stderr


def test_check_reports_the_backend_and_the_bodies_left_in_the_database(city):
    from mailserver.health import OK, WARN, store_checks

    server = city(before=lambda config, people: _bodies_in_the_database(config, people, 3))
    [found] = [f for f in store_checks(server.config) if f.what.startswith("message bodies")]
    assert found.status == WARN and "3 bodies still in the database" in found.what, found
    assert "blobs migrate" in found.fix
    bodies.migrate_bodies(server.store)
    [found] = [f for f in store_checks(server.config) if f.what.startswith("message bodies")]
    assert found.status == OK and found.what.startswith("message bodies: local blob store, local directory "), found


def test_a_downgrade_below_0017_with_bodies_in_the_blob_store_is_refused(city):
    server = city()
    _send(server, server.people.alice, _message(5))
    server.store.engine.dispose()
    with pytest.raises(RuntimeError, match="blob store"):
        migrate.downgrade(server.store, "0016")
    assert migrate.is_current(server.store)


# -- S3 ---------------------------------------------------------------------------------------

def test_s3_backend_put_get_list_delete(s3_endpoint, s3_env):
    make_bucket(s3_endpoint, "unit")
    blobs = S3Blobs("unit", s3_endpoint, "us-east-1", prefix="city/bodies")
    blobs.ping()
    with pytest.raises(Exception, match="404|Not Found|NoSuchBucket"):  # what `civicmail check` reports
        S3Blobs("no-such-bucket", s3_endpoint, "us-east-1").ping()
    items = {blob_key(r): r for r in (_message(n) for n in range(40))}
    blobs.put_many(items)
    assert all(blobs.exists(k) for k in items)
    fresh = S3Blobs("unit", s3_endpoint, "us-east-1", prefix="city/bodies")  # no cache: from the server
    assert fresh.get_many(list(items)) == items
    assert sorted(fresh.keys_older_than(time.time() + 60)) == sorted(items)
    assert list(fresh.keys_older_than(time.time() - 3600)) == []
    gone = sorted(items)[:10]
    fresh.delete_many(gone)
    with pytest.raises(BlobMissing):
        fresh.get(gone[0])
    assert sorted(fresh.keys_older_than(time.time() + 60)) == sorted(items)[10:]


def test_s3_backend_through_smtp_imap_and_gc(city, s3_endpoint, s3_env, store_url):
    bucket = f"city-{abs(hash(store_url)) % 10**8}"
    make_bucket(s3_endpoint, bucket)
    server = city('blobs.backend="s3"', f'blobs.bucket="{bucket}"', f'blobs.endpoint="{s3_endpoint}"',
                  'blobs.region="us-east-1"')
    store = server.store
    assert store.blobs.backend == "s3"
    raw = _message(6)
    _send(server, server.people.bob, raw)
    [(in_db, key)] = _rows(store, "SELECT raw, blob_key FROM content")
    assert in_db is None
    fresh = S3Blobs(bucket, s3_endpoint, "us-east-1")
    assert fresh.get(key).endswith(raw)
    c = _imap(server, server.people.bob)
    try:
        c.select("INBOX")
        assert c.fetch("1", "(BODY[])")[1][0][1] == fresh.get(key)
        c.store("1", "+FLAGS", r"(\Deleted)")
        c.expunge()
    finally:
        c.logout()
    assert bodies.collect(store, 3600) == {"released": 1, "swept": 0, "orphans": 0}
    assert not fresh.exists(key)

"""`civicmail backup` and `civicmail restore` (issue 16, item 8), through the real CLI.

The bar: a backup taken while `serve` receives SMTP mail and a drop runs holds every message
acknowledged with 250 before it started and every notice committed before it started; the
restored data directory serves them (IMAP), and matches ID numbers with the restored keys."""
from __future__ import annotations

import datetime as dt
import imaplib
import json
import os
import smtplib
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from delivery.catalog import load_agencies, load_catalog
from mailserver import backup as backup_mod
from mailserver import config as config_mod
from mailserver.backup import KEY_SAMPLE
from mailserver.bench.pipeline import write_drop
from mailserver.bench.util import write_citizens_csv
from mailserver.config import REPO_ROOT
from mailserver.errors import UserError
from mailserver.identity import idnumber
from mailserver.identity.keys import IdKeyring
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency, grant
from mailserver.registry.bulk import import_file
from mailserver.registry.citizens import add_citizen
from mailserver.store import migrate, open_store
from mailserver.store.blobs import blob_key
from mailserver.store.models import Content, Folder, Message, Notice
from tests.abuse import ALL_PORTS_ZERO
from tests.serverkit import LoopServer, mailbox_raw, prepared_city

PASSWORD = "correct horse battery"
DROP_ROWS = 1000
PEOPLE = (("李强", idnumber.make("330106", dt.date(1981, 2, 1), 300)),
          ("陈静", idnumber.make("330106", dt.date(1981, 2, 2), 301)))


def civicmail(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailserver.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def _populate(tmp_path: Path):
    def populate(reg: Registry) -> list[str]:
        templates = REPO_ROOT / "templates"
        catalog = load_catalog(templates)
        for agency_id, info in load_agencies(templates).items():
            add_agency(reg, agency_id, info["name"], [info["sender"]], "agency-password-1")
            grant(reg, agency_id, sorted(d.id for d in catalog.values() if d.agency == agency_id))
        citizens = tmp_path / "citizens.csv"
        write_citizens_csv(citizens, DROP_ROWS, seed=7)
        assert import_file(reg, citizens, None).imported == DROP_ROWS
        assert write_drop(citizens, tmp_path / "drop.csv") == DROP_ROWS
        return [add_citizen(reg, name, number, password=PASSWORD).address for name, number in PEOPLE]

    return populate


class Sender(threading.Thread):
    """Sends mail to the citizens over SMTP without pause; records when each 250 came."""

    def __init__(self, port: int, addresses: list[str]) -> None:
        super().__init__(daemon=True)
        self.port, self.addresses = port, addresses
        self.acked: list[tuple[float, str, str]] = []  # (monotonic time of the 250, recipient, token)
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            while not self.stop.is_set():
                n += 1
                to, token = self.addresses[n % len(self.addresses)], f"load-{n:06d}"
                c.sendmail("clerk@outside.example", [to],
                           f"From: clerk@outside.example\r\nTo: {to}\r\nSubject: {token}\r\n\r\nbody {token}\r\n")
                self.acked.append((time.monotonic(), to, token))


def _notice_keys(store) -> set[str]:
    with store.reader() as s:
        return set(s.scalars(select(Notice.idempotency_key)))


def _consistent(store) -> None:
    """Each folder's counters agree with its messages: a torn copy of the database would not."""
    with store.reader() as s:
        rows = s.execute(select(Folder.id, Folder.message_count, Folder.uidnext,
                                select(func.count(Message.id)).where(Message.folder_id == Folder.id)
                                .scalar_subquery(),
                                select(func.max(Message.uid)).where(Message.folder_id == Folder.id)
                                .scalar_subquery())).all()
    assert rows and all(count == real and (top or 0) < uidnext for _, count, uidnext, real, top in rows), rows


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture
def restore_target(engine, request):
    """Where a restore puts the database: nothing for SQLite (the data directory), else a second
    empty PostgreSQL database."""
    return () if engine == "sqlite" else ("--store-url", request.getfixturevalue("pg_url_2"))


@pytest.fixture
def pg_url_2(pg_url):
    import secrets

    from tests.conftest import PG_ADMIN, _pg_admin_engine

    name = f"civicmail_test_{secrets.token_hex(6)}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def loaded_city(tmp_path, engine, request):
    url = request.getfixturevalue("pg_url") if engine == "postgresql" else None
    config, addresses = prepared_city(tmp_path / "data", ALL_PORTS_ZERO, _populate(tmp_path), store_url=url)
    server = LoopServer(config).start()
    yield config, addresses, server, ("--set", f"store.url={url}") if url else ()
    server.stop()


def test_backup_under_load_restores_every_acknowledged_message_and_notice(loaded_city, restore_target, tmp_path):
    config, addresses, server, store_option = loaded_city
    sender = Sender(server.port("smtp"), addresses)
    sender.start()
    drop = subprocess.Popen(
        [sys.executable, "-m", "mailserver.cli", "-c", str(config.source), *store_option,
         "--set", "delivery.batch_size=100",  # at least blobs.pack_min: on SQLite each batch's bodies are a pack
         "--set", "delivery.workers=1", "drop", "run", str(tmp_path / "drop.csv"), "--agency", "traffic-police",
         "--notice-type", "licence-renewal"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not _notice_keys(server.store) or len(sender.acked) < 20:
            assert drop.poll() is None, drop.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        notices_before = _notice_keys(server.store)  # committed: a reader sees nothing else
        started = time.monotonic()
        assert drop.poll() is None, "the drop finished before the backup started: no load to back up under"
        backup = civicmail("-c", str(config.source), *store_option, "backup", str(tmp_path / "backup"),
                           "--keys-to", str(tmp_path / "keys"))
        finished = time.monotonic()
        assert backup.returncode == 0, backup.stderr
        assert any(started < t < finished for t, _, _ in sender.acked), "no mail was acknowledged during the backup"
        _, err = drop.communicate(timeout=300)
        assert drop.returncode == 0, err
    finally:
        sender.stop.set()
        sender.join(30)
        if drop.poll() is None:
            drop.kill()
            drop.communicate()
    acked_before = [(to, token) for t, to, token in sender.acked if t < started]
    assert len(notices_before) < DROP_ROWS  # the drop was still running: the backup is a snapshot of a moving store

    restored = tmp_path / "restored"
    result = civicmail("restore", str(tmp_path / "backup"), str(restored), "--keys-from", str(tmp_path / "keys"),
                       *restore_target)
    assert result.returncode == 0, result.stderr
    assert f"keys checked on {2 * KEY_SAMPLE} citizens" in result.stdout  # the oldest and the newest
    rconfig = config_mod.load(restored / "civicmail.toml", ALL_PORTS_ZERO)
    assert rconfig.data_dir == restored.resolve()
    assert rconfig.store_url == (restore_target[1] if restore_target else f"sqlite:///{restored}/civicmail.sqlite3")

    store = open_store(rconfig)
    try:
        inboxes = {a: {raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for raw in mailbox_raw(store, a)
                       if b"Subject: load-" in raw} for a in addresses}
        missing = [(to, token) for to, token in acked_before if token not in inboxes[to]]
        assert not missing, f"{len(missing)} acknowledged messages not in the restored store, first {missing[:3]}"
        restored_notices = _notice_keys(store)
        assert notices_before <= restored_notices, f"{len(notices_before - restored_notices)} notices lost"
        _consistent(store)
        # each restored notice's body reads back whole: on SQLite from the packs and the pack
        # index the backup copied (taken while the drop wrote more of both)
        with store.reader() as s:
            keys = list(s.scalars(select(Content.blob_key).join(Message, Message.content_id == Content.id)
                                  .join(Notice, Notice.message_id == Message.id).where(Content.blob_key.is_not(None))))
        if not restore_target:
            assert len(keys) >= len(notices_before) and list((restored / "blobs" / "packs").glob("*.pack"))
        got = store.blobs.get_many(keys) if keys else {}
        assert len(got) == len(set(keys)) and all(blob_key(raw) == key for key, raw in got.items())
        with store.reader() as s:  # each notice's message came back with it
            assert s.scalar(select(func.count(Notice.id)).where(
                Notice.message_id.not_in(select(Message.id)))) == 0
    finally:
        store.dispose()

    # The restored data directory serves: logins, the mail, and ID-number matching with the restored keys.
    again = LoopServer(rconfig).start()
    try:
        token = next(token for to, token in acked_before if to == addresses[1])
        with imaplib.IMAP4("127.0.0.1", again.port("imap"), timeout=30) as c:
            c.login(addresses[1], PASSWORD)
            c.select("INBOX", readonly=True)
            typ, data = c.search(None, "SUBJECT", token)
            assert typ == "OK" and data[0], data
            typ, data = c.fetch(data[0].split()[0], "(BODY.PEEK[TEXT])")
            assert typ == "OK" and f"body {token}".encode() in data[0][1]
        one_row = tmp_path / "after.csv"
        one_row.write_text("reference,id_number,name,licence_number,expiry_date,office\n"
                           f"AFTER-1,{PEOPLE[0][1]},{PEOPLE[0][0]},330100000000000001,2027-03-01,滨江分所\n",
                           encoding="utf-8")
        run = civicmail("-c", str(restored / "civicmail.toml"), "drop", "run", str(one_row), "--agency",
                        "traffic-police", "--notice-type", "licence-renewal")
        assert run.returncode == 0, run.stderr
        with imaplib.IMAP4("127.0.0.1", again.port("imap"), timeout=30) as c:
            c.login(addresses[0], PASSWORD)
            c.select("INBOX", readonly=True)
            typ, data = c.search(None, "FROM", "traffic-police")
            assert typ == "OK" and len(data[0].split()) == 1, data
    finally:
        again.stop()


@pytest.fixture
def small_city(tmp_path):
    """A data directory (SQLite) with two citizens, a spooled drop waiting and a drop report."""
    config, _ = prepared_city(tmp_path / "data", (), lambda reg: [add_citizen(reg, name, number) for name, number in PEOPLE])
    text = config.source.read_text(encoding="utf-8")  # two keys away from their defaults, in the file
    config.source.write_text(text.replace('hostname = "mail.hz.example.cn"', 'hostname = "mx.hz.example.cn"')
                             .replace("max_search_keys = 256", "max_search_keys = 300"), encoding="utf-8")
    spooled = config.data_path("spool") / "traffic-police" / "licence-renewal" / "waiting.csv"
    spooled.parent.mkdir(parents=True)
    spooled.write_text("reference,id_number\n", encoding="utf-8")
    report = config.data_path("drops") / "1" / "report.csv"
    report.parent.mkdir(parents=True)
    report.write_text("row,status\n", encoding="utf-8")
    return config


def _backup(config, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return civicmail("-c", str(config.source), "backup", str(tmp_path / "backup"), *args)


def test_backup_refuses_to_put_the_keys_in_the_backup_and_keeps_them_out(small_city, tmp_path):
    from tests.cahelpers import make_ca

    config = small_city
    make_ca(config)  # the city CA: its issuing key is carried, its root key never
    result = _backup(config, tmp_path)
    assert result.returncode == 1 and "--keys-to KEYDIR is required" in result.stderr, result.stderr
    for keys_to, refusal in ((tmp_path / "backup" / "keys", "must be apart"),
                             (tmp_path, "must be apart"),
                             (config.data_dir / "keys-copy", "outside the data directory")):
        with pytest.raises(UserError, match=refusal):
            backup_mod.backup(config, tmp_path / "backup", keys_to)
    assert not (tmp_path / "backup").exists()

    result = _backup(config, tmp_path, "--keys-to", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    backup, keys = tmp_path / "backup", tmp_path / "keys"
    ring = (config.data_path("keys") / "idnumber.json").read_text()
    assert (keys / "idnumber.json").read_text() == ring
    secrets = [v for v in json.loads(ring)["enc"].values()] + [json.loads(ring)["mac"]]
    for path in [backup, keys, *backup.rglob("*"), *keys.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        if path.is_file() and path.parent != keys:
            assert not any(k.encode() in path.read_bytes() for k in secrets), f"key material in {path}"
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["engine"] == "sqlite" and manifest["schema_revision"] == migrate.head_revision()
    assert {"database.sqlite3", "civicmail.toml", "files/tls/cert.pem", "files/tls/key.pem", "files/dkim/civic1.key",
            "files/spool/traffic-police/licence-renewal/waiting.csv", "files/drops/1/report.csv"} <= set(manifest["files"])
    assert not any(name.startswith("files/keys") or "sqlite3-" in name for name in manifest["files"])
    assert "files/ca/issuing.key" in manifest["files"]
    assert not any(name.startswith("files/ca-root") for name in manifest["files"])

    with pytest.raises(UserError, match="is not empty"):
        backup_mod.backup(config, backup, tmp_path / "keys2")
    (keys / "idnumber.json").write_text(IdKeyring.generate().save(tmp_path / "k3").read_text())
    with pytest.raises(UserError, match="holds other keys"):  # never overwritten: an older backup may need them
        backup_mod.backup(config, tmp_path / "backup2", keys)


def test_restore_checks_the_backup_and_the_keys_before_it_writes(small_city, tmp_path):
    config = small_city
    assert _backup(config, tmp_path, "--keys-to", str(tmp_path / "keys")).returncode == 0
    backup, target = tmp_path / "backup", tmp_path / "restored"

    def restore(keys: Path) -> subprocess.CompletedProcess:
        return civicmail("restore", str(backup), str(target), "--keys-from", str(keys))

    other = tmp_path / "other-keys"
    IdKeyring.generate().save(other)  # another city's keys
    result = restore(other)
    assert result.returncode == 1 and "are not this backup's" in result.stderr, result.stderr
    assert not target.exists()

    cert = backup / "files" / "tls" / "cert.pem"
    good = cert.read_bytes()
    cert.write_bytes(good.replace(b"MII", b"MIJ", 1))
    with pytest.raises(UserError, match="does not match its SHA-256"):
        backup_mod.restore(backup, target, tmp_path / "keys")
    assert not target.exists()
    cert.write_bytes(good)

    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(UserError, match="is not empty"):
        backup_mod.restore(backup, target, tmp_path / "keys")
    (target / "something").unlink()

    result = restore(tmp_path / "keys")
    assert result.returncode == 0, result.stderr
    assert (target / "spool" / "traffic-police" / "licence-renewal" / "waiting.csv").exists()
    assert (target / "drops" / "1" / "report.csv").read_text(encoding="utf-8") == "row,status\n"
    assert (target / "tls" / "cert.pem").read_bytes() == good
    assert stat.S_IMODE((target / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "civicmail.sqlite3").stat().st_mode) == 0o600
    restored = config_mod.load(target / "civicmail.toml")
    assert restored.server.hostname == "mx.hz.example.cn" and restored.imap.max_search_keys == 300
    assert restored.data_dir == target.resolve() and restored.store.url == ""
    shown = civicmail("-c", str(target / "civicmail.toml"), "citizen", "show", "li.qiang@hz.example.cn")
    number = PEOPLE[0][1]
    assert shown.returncode == 0 and f"{number[:3]}{'*' * 13}{number[-2:]}" in shown.stdout, shown.stderr


def test_a_file_outside_the_data_directory_comes_back_inside_it(small_city, tmp_path):
    config = small_city
    outside = tmp_path / "etc-tls"
    outside.mkdir()
    for name in ("cert.pem", "key.pem"):
        (outside / name).write_bytes(config.data_path(f"tls/{name}").read_bytes())
    result = civicmail("-c", str(config.source), "--set", f"tls.cert={outside / 'cert.pem'}",
                       "--set", f"tls.key={outside / 'key.pem'}", "backup", str(tmp_path / "backup"),
                       "--keys-to", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    assert "also copied        tls.cert from outside the data directory" in result.stdout
    target = tmp_path / "restored"
    result = civicmail("restore", str(tmp_path / "backup"), str(target), "--keys-from", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    restored = config_mod.load(target / "civicmail.toml")
    cert = restored.data_path(restored.tls.cert)
    assert restored.tls.cert == "external/tls.cert/cert.pem" and cert.read_bytes() == (outside / "cert.pem").read_bytes()
    assert stat.S_IMODE(restored.data_path(restored.tls.key).stat().st_mode) == 0o600



def test_restore_brings_back_the_sign_in_key_and_the_empty_spool_folders(small_city, tmp_path):
    """The OpenID Connect signing key travels with the ID-number keys (never in the backup): an
    ID token the city signed before the backup verifies against the restored city's JWKS, served
    over HTTP. An agency's spool folder waiting for its first drop comes back, though empty."""
    import requests
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from mailserver.identity.oidckeys import KEYFILE, SigningKeys

    config = small_city
    waiting = config.data_path("spool") / "civil-affairs" / "marriage-registration"
    waiting.mkdir(parents=True)
    signing = SigningKeys.load(config.data_path("keys")).current
    token = jwt.encode({"alg": "RS256", "kid": signing.kid}, {"sub": "li.qiang", "iss": "before"}, signing.key)
    assert _backup(config, tmp_path, "--keys-to", str(tmp_path / "keys")).returncode == 0
    assert (tmp_path / "keys" / KEYFILE).read_bytes() == config.data_path(f"keys/{KEYFILE}").read_bytes()
    assert stat.S_IMODE((tmp_path / "keys" / KEYFILE).stat().st_mode) == 0o600
    assert not any(KEYFILE in name for name in json.loads((tmp_path / "backup" / "manifest.json").read_text())["files"])

    keys = tmp_path / "keys"
    moved = keys / (KEYFILE + ".away")  # a key folder without it: refused before anything is written
    (keys / KEYFILE).rename(moved)
    target = tmp_path / "restored"
    result = civicmail("restore", str(tmp_path / "backup"), str(target), "--keys-from", str(keys))
    assert result.returncode == 1 and f"{KEYFILE} is missing" in result.stderr, result.stderr
    SigningKeys.generate().save(keys)  # another city's sign-in key
    result = civicmail("restore", str(tmp_path / "backup"), str(target), "--keys-from", str(keys))
    assert result.returncode == 1 and "does not hold the OpenID Connect signing key" in result.stderr, result.stderr
    assert not target.exists()
    moved.replace(keys / KEYFILE)
    SigningKeys.load(keys).rotated(config.oidc.id_token_ttl).save(keys)  # later keys, after a rotation, will do

    result = civicmail("restore", str(tmp_path / "backup"), str(target), "--keys-from", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    assert (target / "spool" / "civil-affairs" / "marriage-registration").is_dir()
    assert not any((target / "spool" / "civil-affairs" / "marriage-registration").iterdir())
    assert stat.S_IMODE((target / "keys" / KEYFILE).stat().st_mode) == 0o600
    assert SigningKeys.load(target / "keys").keys[0].kid == signing.kid
    again = LoopServer(config_mod.load(target / "civicmail.toml", ALL_PORTS_ZERO)).start()
    try:
        base = f"http://127.0.0.1:{again.port('citizen services HTTP')}"
        jwks_uri = requests.get(base + "/.well-known/openid-configuration", timeout=30).json()["jwks_uri"]
        keys = KeySet.import_key_set(requests.get(jwks_uri, timeout=30).json())
        assert jwt.decode(token, keys).claims["sub"] == "li.qiang"
    finally:
        again.stop()


def test_a_restore_of_a_city_on_s3_never_collects_the_shared_bucket(tmp_path, s3_endpoint, s3_env):
    """The restored copy shares the live city's bucket but its database names only the blobs of
    the backup's time: its configuration says blobs.gc_interval = 0, and the restore says why."""
    from mailserver import configfile
    from tests.conftest import make_bucket

    make_bucket(s3_endpoint, "city-restore")
    s3 = ('blobs.backend="s3"', 'blobs.bucket="city-restore"', f'blobs.endpoint="{s3_endpoint}"',
          'blobs.region="us-east-1"')
    config, _ = prepared_city(tmp_path / "data", s3, lambda reg: [add_citizen(reg, n, i) for n, i in PEOPLE])
    configfile.write(config.source, config)  # the S3 settings in the file itself, as a city on S3 has them
    assert config_mod.load(config.source).blobs.gc_interval > 0
    assert _backup(config, tmp_path, "--keys-to", str(tmp_path / "keys")).returncode == 0
    target = tmp_path / "restored"
    result = civicmail("restore", str(tmp_path / "backup"), str(target), "--keys-from", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    restored = config_mod.load(target / "civicmail.toml")
    assert restored.blobs.backend == "s3" and restored.blobs.bucket == "city-restore"
    assert restored.blobs.gc_interval == 0
    assert "blobs.gc_interval = 0" in result.stdout and "shares the S3 bucket city-restore" in result.stdout


def test_a_backup_is_an_audited_read_of_all_personal_data(small_city, tmp_path):
    """Who took a backup, when, where to and why: an audit row written before anything is copied
    (so the backup holds it too); a backup refused for its arguments reads nothing and leaves none."""
    config = small_city
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LOGNAME": "operator-zhao", "USER": "operator-zhao"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(config.source), *args],
                              capture_output=True, text=True, timeout=120, env=env)

    refused = run("backup", str(tmp_path / "backup"))  # no --keys-to
    assert refused.returncode == 1 and "--keys-to" in refused.stderr
    taken = run("backup", str(tmp_path / "backup"), "--keys-to", str(tmp_path / "keys"),
                "--reason", f"nightly, ticket 88 for {PEOPLE[0][1]}")
    assert taken.returncode == 0, taken.stderr
    listed = run("audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [e for e in json.loads(listed.stdout) if e["action"] == "backup"]
    assert len(rows) == 1, rows
    [row] = rows
    assert row["os_user"] == "operator-zhao" and row["actor"] == "operator"
    assert row["detail"] == f"the data directory {config.data_dir} to {(tmp_path / 'backup').resolve()}"
    assert row["reason"].startswith("nightly, ticket 88 for ") and PEOPLE[0][1] not in row["reason"]
    restored = tmp_path / "restored"  # the backup holds its own audit row
    assert civicmail("restore", str(tmp_path / "backup"), str(restored), "--keys-from",
                     str(tmp_path / "keys")).returncode == 0
    again = civicmail("-c", str(restored / "civicmail.toml"), "audit", "list", "--json")
    assert [e["reason"] for e in json.loads(again.stdout) if e["action"] == "backup"] == [row["reason"]]

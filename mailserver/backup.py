"""Online backup and restore of a data directory (``civicmail backup`` / ``civicmail restore``).

A backup is a folder (DEST) and, kept apart, a copy of the ID-number keys (KEYDIR): the keys
decrypt every ID number in the database, so a stolen backup without them reveals none, and one
thief needs both. DEST holds:

- ``files/``: the data directory as it was (TLS certificate and key, DKIM key, spool, drop reports,
  the drop mailbox's position, ...) less the database, the keys and files being written
  (``*.partial``, ``*.tmp``, lock files); a file the configuration names outside the data directory
  (a TLS certificate in /etc, a spool elsewhere) under ``files/external/<key>/``;
- ``database.sqlite3`` (SQLite's online backup API: one consistent snapshot taken from a read
  transaction while ``serve`` writes, as WAL lets readers) or ``database.pgdump`` (``pg_dump -Fc``:
  one consistent snapshot of a running PostgreSQL database);
- ``civicmail.toml``: the configuration file as it was;
- ``manifest.json``, written last: civicmail's version, the schema revision, the time, the SHA-256
  of every file, every folder (an agency's spool folder may hold no file yet), and check values
  of the keys (an HMAC under each ID-number key, the id and RFC 7638 thumbprint of the OpenID
  Connect signing key: they tell whether a key folder is the right one and reveal nothing of
  the keys).

KEYDIR holds the ID-number keys and the OpenID Connect signing keys: a restored city signs in
with the same key, so ID tokens issued before still verify.

The files are copied before the database snapshot is taken. So whatever a file records as done
(a spooled drop moved to ``done/``, the last drop mail read) is in the database too; a drop still
in the copied spool may have run after the copy and runs again after a restore, where its
idempotency keys deliver no notice twice.

A restore goes into an empty data directory: it checks every hash and that the keys given are
the backup's, then writes the files, the keys and the database, and a ``civicmail.toml`` whose
paths point into the new data directory; it checks that the keys decrypt the restored data before
it reports success. A city whose bodies are on S3 shares the bucket with a restored copy: the
copy's configuration gets ``blobs.gc_interval = 0`` (``restore_notes``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import __version__, datadir
from .config import Config
from .errors import UserError
from .privatefiles import fsync_dir
from .store import writequeue
from .store.blobs import PACK_INDEX

MANIFEST = "manifest.json"
FORMAT = 1
FILES = "files"
EXTERNAL = "external"
SQLITE_FILE = "database.sqlite3"
PGDUMP_FILE = "database.pgdump"
CONFIG_FILE = "civicmail.toml"
#: what an HMAC check value of a key is computed over
KEY_CHECK_LABEL = b"civicmail backup key check"
#: citizens whose ID number a restore decrypts and re-indexes with the keys given, oldest and newest
KEY_SAMPLE = 500
#: configuration keys naming a file or folder a backup carries: (section, key, is a folder)
PATH_KEYS = (("tls", "cert", False), ("tls", "key", False), ("dkim", "key", False),
             ("delivery", "spool_dir", True), ("delivery", "templates_dir", True), ("ca", "dir", True),
             ("blobs", "dir", True))
#: never copied from the data directory: being written (replaced whole on completion) or locks
SKIPPED_SUFFIXES = (".partial", ".tmp", ".lock", ".part")
CHUNK = 1 << 20


@dataclass
class BackupResult:
    dest: Path
    keys_to: Path
    engine: str
    revision: str | None
    files: int
    bytes: int
    #: each path key of the configuration -> where its file or folder is in files/ (and in a
    #: restored data directory); external/... for one that lay outside the data directory
    paths: dict[str, str] = field(default_factory=dict)


@dataclass
class RestoreResult:
    data_dir: Path
    config_path: Path
    engine: str
    revision: str | None
    head: str
    files: int
    citizens_checked: int
    #: what the restore changed in the configuration or left to do, one line each
    notes: list[str] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _private_dir(path: Path, mode: int = 0o700) -> None:
    """``path`` made ``mode`` (whatever the umask), and each folder missing above it too."""
    missing = [path] + [p for p in path.parents if not p.is_dir()]
    for folder in reversed(missing):
        folder.mkdir(mode=mode, exist_ok=True)
    for folder in missing:
        os.chmod(folder, mode)


def _copy_private(src: Path, dst: Path, mode: int = datadir.FILE_MODE, dir_mode: int = 0o700) -> str:
    """Copy ``src`` to a new ``dst`` (``mode``; folders made ``dir_mode``), on disk when this
    returns; its SHA-256."""
    if not dst.parent.is_dir():
        _private_dir(dst.parent, dir_mode)
    digest = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _empty_or_absent(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def key_checks(ring) -> dict:
    """HMAC check values of each key of an ID-number key ring: equal for equal keys, and
    nothing learnt of a key from its value."""
    def check(key: bytes) -> str:
        return hmac.new(key, KEY_CHECK_LABEL, hashlib.sha256).hexdigest()

    return {"current": ring.current, "mac": check(ring.mac_key),
            "enc": {str(v): check(k) for v, k in sorted(ring.enc_keys.items())}}


def _pg_command(url: str, timeout: float) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for ``url`` without its password, and the environment that carries
    the password (never on a command line, where `ps` shows it) and the connect timeout."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(max(2, int(round(timeout))))}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    bare = parsed.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _run_pg_tool(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"{argv[0]} not found: install the PostgreSQL client (Debian: postgresql-client)") from None
    if proc.returncode != 0:
        raise UserError(f"{what} failed ({argv[0]} exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


# -- backup ----------------------------------------------------------------------------------

def _skipped(config: Config) -> set[Path]:
    """Paths of the data directory a backup never copies as files (the database, the keys, the
    configuration: each has its own place in a backup; the city CA's root key: it belongs off the
    machine, and a backup is no place for it)."""
    skipped = {config.data_path(config.keys.dir).resolve(), config.data_path(config.ca.root_dir).resolve()}
    skipped |= _blobs_skipped(config)
    db = datadir.sqlite_path(config)
    if db is not None:
        db = db.resolve()
        skipped |= {db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                    db.with_name(db.name + "-journal"), db.with_name(db.name + writequeue.SUFFIX)}
    if config.source is not None:
        skipped.add(config.source.resolve())
    return skipped


def _blobs_skipped(config: Config) -> set[Path]:
    """The local blob store's paths never copied as files: blobs being written (tmp/), and the
    pack index (a live SQLite database, copied by ``_pack_index_snapshot`` instead)."""
    root = config.data_path(config.blobs.dir or "blobs").resolve()
    index = root / "packs" / PACK_INDEX
    return {root / "tmp"} | {index.with_name(index.name + end) for end in ("", "-wal", "-shm", "-journal")}


def _data_files(root: Path, skipped: set[Path], folders: set[str] | None = None) -> Iterator[tuple[Path, str]]:
    """(file, path relative to ``root``) for every regular file below ``root`` a backup copies;
    each folder below ``root`` it walks (relative) into ``folders``."""
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skipped and not (here / d).is_symlink())
        if folders is not None:
            folders.update((here / d).relative_to(root).as_posix() for d in dirs)
        for name in sorted(files):
            path = here / name
            if path.resolve() in skipped or name.endswith(SKIPPED_SUFFIXES):
                continue
            yield path, path.relative_to(root).as_posix()


def _copy_tree(root: Path, skipped: set[Path], dest: Path, prefix: str, hashes: dict[str, str],
               folders: set[str] | None = None) -> int:
    """Copy what ``_data_files`` finds below ``root`` to ``dest/prefix``, but for files already
    copied (in ``hashes``); returns the bytes copied. A file that went away meanwhile (a spooled
    drop moved on) is not an error. Each folder walked goes into ``folders`` as ``prefix/rel``:
    an empty one (an agency's spool folder waiting for its first drop) has no file to carry it."""
    total = 0
    walked: set[str] = set()
    for path, rel in _data_files(root, skipped, walked):
        name = f"{prefix}/{rel}"
        if name in hashes:
            continue
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                continue
            hashes[name] = _copy_private(path, dest / name)
        except FileNotFoundError:
            (dest / name).unlink(missing_ok=True)
            continue
        total += (dest / name).stat().st_size
    if folders is not None:
        folders.update(f"{prefix}/{rel}" for rel in walked)
    return total


def _copy_files(config: Config, dest: Path, hashes: dict[str, str],
                folders: set[str]) -> tuple[int, dict[str, str]]:
    """The data directory's files (and its folders, into ``folders``), and those the
    configuration names outside it. Returns the bytes copied and, for each path key of the
    configuration, where its file or folder is in files/."""
    data = config.data_dir.resolve()
    total = _copy_tree(data, _skipped(config), dest, FILES, hashes, folders)
    paths: dict[str, str] = {}
    for section, key, folder in PATH_KEYS:
        value = getattr(getattr(config, section), key)
        if not value:
            continue
        path = config.data_path(value).resolve()
        if _inside(path, data):
            paths[f"{section}.{key}"] = path.relative_to(data).as_posix()
            continue
        if not path.exists():
            continue
        where = f"{EXTERNAL}/{section}.{key}" + ("" if folder else f"/{path.name}")
        if folder:
            folders.add(f"{FILES}/{where}")
            total += _copy_tree(path, _blobs_skipped(config), dest, f"{FILES}/{where}", hashes, folders)
        else:
            hashes[f"{FILES}/{where}"] = _copy_private(path, dest / FILES / where)
            total += path.stat().st_size
        paths[f"{section}.{key}"] = where
    return total, paths


def _copy_new_blobs(config: Config, dest: Path, paths: dict[str, str], hashes: dict[str, str]) -> int:
    """After the database snapshot: the local blob store's files written since the first copy
    (the bodies of messages delivered meanwhile, which the snapshot names). Blobs are immutable
    and named by their hash, so a file copied once is never copied again. (A blob written after
    the first copy and collected before this one, its message expunged meanwhile, is named by the
    snapshot and missing; the window is the backup's own duration.) An S3 bucket is not copied:
    keep it with the object store's own versioning or replication."""
    if config.blobs_backend != "local" or "blobs.dir" not in paths:
        return 0
    root = config.data_path(config.blobs.dir or "blobs").resolve()
    prefix = f"{FILES}/{paths['blobs.dir']}"
    index = root / "packs" / PACK_INDEX
    if index.exists():  # first: every pack it names is then copied below (packs never change)
        name = f"{prefix}/packs/{PACK_INDEX}"
        _private_dir((dest / name).parent)
        _sqlite_copy(index, dest / name, config.store.busy_timeout)
        fsync_dir(dest / name)  # opens read-only and fsyncs: a file as well as a folder
        hashes[name] = _sha256(dest / name)
    return _copy_tree(root, _blobs_skipped(config), dest, prefix, hashes)


def _sqlite_snapshot(config: Config, target: Path) -> str | None:
    """One consistent copy of the SQLite database, taken in one step of the online backup API
    from a read transaction (WAL: the servers keep writing meanwhile); returns its schema revision."""
    source = datadir.sqlite_path(config)
    assert source is not None
    return _sqlite_copy(source, target, config.store.busy_timeout, _sqlite_revision)


def _sqlite_copy(source: Path, target: Path, timeout: float, then: Callable | None = None):
    """A new ``target``: one consistent copy of the SQLite database ``source``, checked, on
    disk; ``then(copy)`` (a connection to it) is returned."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, datadir.FILE_MODE))
    src = sqlite3.connect(f"file:{urllib.parse.quote(str(source))}?mode=ro", uri=True, timeout=timeout)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: every page in one step, so one snapshot, never restarted by a writer
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        problem = dst.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise UserError(f"the copy of {source.name} fails SQLite's quick_check: {problem}")
        return then(dst) if then is not None else None
    finally:
        dst.close()
        src.close()


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def _pg_snapshot(config: Config, target: Path) -> str | None:
    """``pg_dump -Fc``: one consistent snapshot of the running database; its schema revision,
    refused if a migration ran meanwhile."""
    from .store import migrate, open_store

    store = open_store(config)
    try:
        before = migrate.current_revision(store)
        uri, env = _pg_command(config.store_url, config.store.connect_timeout)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, datadir.FILE_MODE))
        _run_pg_tool(["pg_dump", "--no-password", "--format=custom", f"--file={target}", f"--dbname={uri}"], env,
                     "pg_dump")
        if migrate.current_revision(store) != before:
            raise UserError("the schema was migrated while the backup ran: take the backup again")
        return before
    finally:
        store.dispose()


def _keep_key_file(source: Path, target: Path) -> str:
    """``source`` copied to ``target`` (0600) unless the same file is there already; a different
    one there is never overwritten (it may be the only copy of the keys of an older backup).
    Returns its SHA-256."""
    if target.exists():
        digest = _sha256(target)
        if digest != _sha256(source):
            raise UserError(f"{target} holds other keys: give --keys-to an empty folder (that file may be the "
                            "only copy of the keys an older backup needs)")
        os.chmod(target, datadir.FILE_MODE)
        return digest
    return _copy_private(source, target)


def _write_keys(config: Config, keys_to: Path) -> tuple[dict, str, dict | None]:
    """The key files into ``keys_to`` (0700, files 0600): the ID-number keys and the OpenID
    Connect signing keys (a restored city must sign with the same key, or every ID token and
    every client's cached JWKS stops verifying). Returns the ID keys' check values, the SHA-256
    of their file, and the current signing key's id and RFC 7638 thumbprint (public: it names
    the key and reveals nothing of it; None: the data directory has no signing key yet)."""
    from .identity.keys import KEYFILE, IdKeyring
    from .identity.oidckeys import KEYFILE as OIDC_KEYFILE, SigningKeys

    source = config.data_path(config.keys.dir)
    ring = IdKeyring.load(source)
    _private_dir(keys_to)
    digest = _keep_key_file(source / KEYFILE, keys_to / KEYFILE)
    oidc = None
    if (source / OIDC_KEYFILE).exists():
        _keep_key_file(source / OIDC_KEYFILE, keys_to / OIDC_KEYFILE)
        current = SigningKeys.load(keys_to).current
        oidc = {"kid": current.kid, "thumbprint": current.key.thumbprint()}
    fsync_dir(keys_to)
    return key_checks(ring), digest, oidc


def _check_places(config: Config, dest: Path, keys_to: Path | None) -> None:
    if keys_to is None:
        raise UserError("--keys-to KEYDIR is required: the ID-number keys are written there, never into the backup "
                        "itself, so that a copy of the backup alone reveals no ID number (keep KEYDIR on other media)")
    data = config.data_dir.resolve()
    if _inside(keys_to, dest) or _inside(dest, keys_to):
        raise UserError(f"--keys-to {keys_to} and the backup {dest} must be apart (neither inside the other)")
    for what, path in (("the backup", dest), ("--keys-to", keys_to)):
        if _inside(path, data) or _inside(data, path):
            raise UserError(f"{what} {path} must be outside the data directory {data}")
    if not _empty_or_absent(dest):
        raise UserError(f"{dest} is not empty: a backup goes into a new or empty folder")
    database = datadir.sqlite_path(config)
    if database is not None and not database.exists():
        raise UserError(f"no database at {database}: nothing to back up (run `civicmail init`)")


def backup(config: Config, dest: Path, keys_to: Path | None,
           audit: Callable[[Path], None] | None = None) -> BackupResult:
    """Back up the data directory of ``config`` into ``dest`` and its ID-number keys into
    ``keys_to`` while the servers run (module docstring). ``audit(dest)`` is called once the
    places are found good and before anything is copied: a backup reads every citizen's data,
    and the audit row it writes is then in the backup too."""
    dest = dest.expanduser().resolve()
    keys_to = keys_to.expanduser().resolve() if keys_to is not None else None
    _check_places(config, dest, keys_to)
    assert keys_to is not None
    if audit is not None:
        audit(dest)
    _private_dir(dest)
    hashes: dict[str, str] = {}
    folders: set[str] = set()
    size, paths = _copy_files(config, dest, hashes, folders)  # before the snapshot: see the module docstring
    engine = "sqlite" if datadir.sqlite_path(config) is not None else "postgresql"
    database = SQLITE_FILE if engine == "sqlite" else PGDUMP_FILE
    revision = (_sqlite_snapshot if engine == "sqlite" else _pg_snapshot)(config, dest / database)
    size += _copy_new_blobs(config, dest, paths, hashes)
    fsync_dir(dest / database)  # opens read-only and fsyncs: a file as well as a folder
    hashes[database] = _sha256(dest / database)
    if config.source is not None:
        hashes[CONFIG_FILE] = _copy_private(config.source, dest / CONFIG_FILE)
    keys, key_file_hash, oidc_key = _write_keys(config, keys_to)
    manifest = {
        "format": FORMAT, "civicmail": __version__, "engine": engine, "schema_revision": revision,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"data_dir": str(config.data_dir), "hostname": config.server.hostname,
                   "domain": config.city.domain},
        "database": database, "paths": paths,
        "keys": {**keys, "file_sha256": key_file_hash, "oidc": oidc_key},
        "files": dict(sorted(hashes.items())), "folders": sorted(folders),
    }
    tmp = dest / (MANIFEST + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, datadir.FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest / MANIFEST)
    for folder in {dest} | {(dest / name).parent for name in hashes}:
        fsync_dir(folder)
    return BackupResult(dest, keys_to, engine, revision, len(hashes),
                        size + (dest / database).stat().st_size, paths)


# -- restore ---------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{src} has no {MANIFEST}: not a backup, or one that did not finish") from None
    except ValueError:
        raise UserError(f"{src / MANIFEST} is damaged (not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{src / MANIFEST}: a backup format this civicmail does not know "
                        f"({manifest.get('format') if isinstance(manifest, dict) else '?'}; it reads {FORMAT})")
    return manifest


def verify_files(src: Path, manifest: dict) -> int:
    """Every file the manifest names is there with its SHA-256; the number of files."""
    for name, digest in manifest["files"].items():
        path = src / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise UserError(f"{MANIFEST} names a path outside the backup: {name!r}")
        if not path.is_file():
            raise UserError(f"{path} is missing from the backup")
        if _sha256(path) != digest:
            raise UserError(f"{path} does not match its SHA-256 in {MANIFEST}: the backup is damaged")
    for name in manifest.get("folders", []):
        if ".." in Path(name).parts or Path(name).is_absolute() or not name.startswith(FILES + "/"):
            raise UserError(f"{MANIFEST} names a folder outside the backup: {name!r}")
    return len(manifest["files"])


def _load_keys(keys_from: Path, manifest: dict):
    """The key ring in ``keys_from``, if it holds every key the backup's data was written with."""
    from .identity.keys import IdKeyring

    ring = IdKeyring.load(keys_from)
    have, want = key_checks(ring), manifest["keys"]
    missing = [v for v, check in want["enc"].items() if have["enc"].get(v) != check]
    if have["mac"] != want["mac"] or missing:
        raise UserError(f"the keys in {keys_from} are not this backup's"
                        + (f" (encryption key version {', '.join(missing)} missing or different)" if missing else
                           " (another index key)") + ": give --keys-from the folder `backup --keys-to` wrote")
    return ring


def _oidc_key_file(keys_from: Path, manifest: dict) -> Path | None:
    """The OpenID Connect key file in ``keys_from``, if it holds the key the backup's city signed
    with (a later file, after `oidc rotate-keys`, keeps it while its tokens live); None: the
    backup had none."""
    from .errors import ConfigError
    from .identity.oidckeys import KEYFILE, SigningKeys

    want = manifest["keys"].get("oidc")
    if want is None:
        return None
    path = keys_from / KEYFILE
    if not path.is_file():
        raise UserError(f"{path} is missing: the backup's OpenID Connect signing key was written there with the "
                        "ID-number keys (without it, no ID token the city signed verifies)")
    try:
        keys = SigningKeys.load(keys_from).keys
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if not any(k.kid == want["kid"] and k.key.thumbprint() == want["thumbprint"] for k in keys):
        raise UserError(f"{path} does not hold the OpenID Connect signing key this backup was taken with "
                        f"(key {want['kid']}): give --keys-from the folder `backup --keys-to` wrote")
    return path


def _restored_config(src: Path, data_dir: Path, manifest: dict, store_url: str) -> Config:
    """The backed-up configuration with its paths in the new data directory: the data directory
    itself, the database (SQLite: the default file there), the keys, and each file the backup
    carries where the restore puts it."""
    from . import config as config_mod

    path = src / CONFIG_FILE
    original = config_mod.load(path) if path.exists() else config_mod.build({})
    changes: dict[str, dict[str, str]] = {"server": {"data_dir": "."}, "store": {"url": store_url},
                                          "keys": {"dir": "keys"}}
    for name, where in manifest["paths"].items():
        section, key = name.split(".", 1)
        changes.setdefault(section, {})[key] = where
    if original.blobs.backend == "s3":  # see restore_notes
        changes.setdefault("blobs", {})["gc_interval"] = 0.0
    sections = {section: dataclasses.replace(getattr(original, section), **values)
                for section, values in changes.items()}
    return original.replace(**sections, source=data_dir / CONFIG_FILE)


def restore_notes(config: Config, manifest: dict) -> list[str]:
    """What an operator must know of a restored configuration. On S3 the restored city shares
    the live city's bucket: its database names fewer blobs than the bucket holds (those written
    since the backup), so a collection by it would delete bodies the live city still reads; its
    garbage collection is off (``blobs.gc_interval = 0``)."""
    notes = []
    if config.blobs.backend == "s3":
        notes.append(f"blobs.gc_interval = 0 in {config.source}: this copy shares the S3 bucket {config.blobs.bucket} "
                     "with the city it was backed up from and must never collect its blobs (never run "
                     "`civicmail blobs gc` here; set it back only once this copy is the one city using the bucket)")
    if manifest["keys"].get("oidc") is None:
        notes.append("the backup holds no OpenID Connect signing key: `civicmail db upgrade` makes a new one "
                     "(ID tokens signed before no longer verify)")
    return notes


def _target_url(manifest: dict, store_url: str | None) -> str:
    if manifest["engine"] == "sqlite":
        if store_url:
            raise UserError("--store-url is for a PostgreSQL backup: this one is SQLite, restored into the "
                            "data directory")
        return ""
    if not store_url or not store_url.startswith("postgresql"):
        raise UserError("this backup is of a PostgreSQL database: give --store-url postgresql://... of an empty "
                        "database to restore it into")
    return store_url


def _pg_restore(config: Config, dump: Path) -> None:
    from sqlalchemy import inspect

    from .store import open_store

    store = open_store(config)
    try:
        if inspect(store.engine).get_table_names():
            raise UserError("the database of --store-url is not empty: restore into a new, empty database")
    finally:
        store.dispose()
    uri, env = _pg_command(config.store_url, config.store.connect_timeout)
    _run_pg_tool(["pg_restore", "--no-password", "--exit-on-error", "--single-transaction", "--no-owner",
                  "--no-privileges", f"--dbname={uri}", str(dump)], env, "pg_restore")


def check_keys_against_data(config: Config, ring) -> int:
    """Decrypt the ID numbers of the oldest and newest citizens with ``ring`` and recompute their
    index: a wrong key fails here. Returns how many were checked."""
    from cryptography.exceptions import InvalidTag
    from sqlalchemy import select

    from .store import open_store
    from .store.models import Citizen

    store = open_store(config)
    try:
        with store.reader() as s:
            rows = {r.id: r for order in (Citizen.id.asc(), Citizen.id.desc())
                    for r in s.execute(select(Citizen.id, Citizen.id_index, Citizen.id_cipher)
                                       .order_by(order).limit(KEY_SAMPLE))}
    finally:
        store.dispose()
    for row in rows.values():
        try:
            number = ring.decrypt(row.id_cipher)
        except (InvalidTag, KeyError):  # a wrong key, or a key version the ring lacks
            number = None
        if number is None or not hmac.compare_digest(ring.index(number), row.id_index):
            raise UserError(f"the keys given do not decrypt citizen {row.id}'s ID number in the restored data")
    return len(rows)


def restore(src: Path, data_dir: Path, keys_from: Path, store_url: str | None = None) -> RestoreResult:
    """Restore the backup ``src`` into the new or empty ``data_dir`` with the keys in ``keys_from``
    (module docstring). On failure after writing started, what was written is removed again."""
    from . import configfile
    from .identity.keys import KEYFILE
    from .store import migrate

    src, data_dir = src.expanduser().resolve(), data_dir.expanduser().resolve()
    manifest = read_manifest(src)
    if not _empty_or_absent(data_dir):
        raise UserError(f"{data_dir} is not empty: restore into a new or empty data directory")
    url = _target_url(manifest, store_url)
    files = verify_files(src, manifest)
    ring = _load_keys(keys_from.expanduser().resolve(), manifest)
    oidc_key = _oidc_key_file(keys_from.expanduser().resolve(), manifest)
    config = _restored_config(src, data_dir, manifest, url)
    created = not data_dir.exists()
    _private_dir(data_dir, datadir.DIR_MODE)
    try:
        for name in manifest["files"]:
            if name.startswith(FILES + "/"):
                _copy_private(src / name, data_dir / name[len(FILES) + 1:], dir_mode=datadir.DIR_MODE)
        for name in manifest.get("folders", []):  # folders that carry no file (an agency's empty spool)
            _private_dir(data_dir / name[len(FILES) + 1:], datadir.DIR_MODE)
        keys_dir = data_dir / "keys"
        _copy_private(keys_from.expanduser().resolve() / KEYFILE, keys_dir / KEYFILE)
        if oidc_key is not None:
            _copy_private(oidc_key, keys_dir / oidc_key.name)
        database = src / manifest["database"]
        if manifest["engine"] == "sqlite":
            _copy_private(database, config.data_dir / "civicmail.sqlite3")
        else:
            _pg_restore(config, database)
        configfile.write(config.source, config)
        checked = check_keys_against_data(config, ring)
        from .store import open_store

        store = open_store(config)
        try:
            revision = migrate.current_revision(store)
        finally:
            store.dispose()
        if revision != manifest["schema_revision"]:
            raise UserError(f"the restored database is at revision {revision}, the backup says "
                            f"{manifest['schema_revision']}")
        datadir.secure(config)
        fsync_dir(data_dir)
    except BaseException:
        _remove_written(data_dir, created)
        raise
    return RestoreResult(data_dir, config.source, manifest["engine"], revision, migrate.head_revision(), files,
                         checked, restore_notes(config, manifest))


def _remove_written(data_dir: Path, created: bool) -> None:
    """Leave ``data_dir`` as restore found it: absent, or empty."""
    if created:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for entry in data_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)

"""The data directory's permissions: it holds all mail, password hashes, phone numbers and keys.

Like Postfix's queue and Dovecot's mail files: the directory and every folder in it 0750, every
file 0600, except what is not secret and another member of the service's group (an operator, a
backup job) may read: the configuration and the TLS certificate, 0640. civicmail runs with umask
027 (cli/__init__.py), so what it makes later (WAL, spool, drop reports) is no looser than that.
``civicmail serve`` checks the tree at start: it warns, or with ``--strict`` refuses to start.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .config import Config

UMASK = 0o027
DIR_MODE = 0o750
FILE_MODE = 0o600
#: files that are not secret: the service's group may read them
READABLE_MODE = 0o640
#: bits no file or folder of the data directory may have: group write, anything for others
TOO_OPEN = 0o027
#: entries the check looks at, at most (a spool with a huge backlog must not delay the start)
CHECK_LIMIT = 100_000


def readable_files(config: Config) -> set[Path]:
    return {config.source.resolve() if config.source else config.data_path("civicmail.toml"),
            config.data_path(config.tls.cert)}


def sqlite_path(config: Config) -> Path | None:
    """The SQLite database file, if the store is one in a file."""
    from sqlalchemy.engine import make_url

    url = make_url(config.store_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create_database_file(config: Config) -> None:
    """Create the SQLite file 0600 before SQLite does (it would make it 0644 under umask 022);
    its -wal and -shm files take the database file's mode."""
    path = sqlite_path(config)
    if path is not None and not path.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))


def secure(config: Config) -> None:
    """Give the data directory and everything in it their modes (``civicmail init``)."""
    readable = readable_files(config)
    for path in _walk(config.data_dir):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & DIR_MODE | 0o700)  # a tighter folder (keys/) stays so
        elif stat.S_ISREG(st.st_mode):
            os.chmod(path, READABLE_MODE if path in readable else FILE_MODE)


def too_open(config: Config) -> list[tuple[Path, int]]:
    """(path, mode) of each folder or file of the data directory with group write or any
    access for others."""
    return [(path, mode) for path in _walk(config.data_dir)
            if (mode := stat.S_IMODE(path.lstat().st_mode)) & TOO_OPEN]


def _walk(root: Path):
    """The root and what is below it (not following symbolic links), up to CHECK_LIMIT entries."""
    if not root.exists():
        return
    yield root
    seen = 1
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            seen += 1
            if seen > CHECK_LIMIT:
                return
            yield path

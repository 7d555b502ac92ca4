"""Files only their owner can read (they hold ID numbers or activation codes), appended to or
replaced whole.

A file a clerk acts on (a drop's report and paper-mail export, an import's activation codes) is
replaced atomically: written beside itself, fsynced, renamed over the old one, the directory
fsynced. A reader, or a run killed at any point, sees the old file or the new one, never a part.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator, TextIO

#: what Excel needs to read a UTF-8 CSV as UTF-8 (Chinese names) rather than the ANSI code page
EXCEL_UTF8 = "utf-8-sig"


def open_private(path: Path, append: bool = False, encoding: str = EXCEL_UTF8) -> TextIO:
    """A text file only its owner can read. Appending to a file that has text already, no second
    byte-order mark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):  # not a device named as the file (/dev/stdout)
        os.fchmod(fd, 0o600)
    if append and encoding == EXCEL_UTF8 and st.st_size > 0:
        encoding = "utf-8"
    return open(fd, "w", encoding=encoding, newline="")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path: Path) -> Path:
    """Where ``replace_private`` writes before the rename (one fixed name: a killed writer's
    leftover is overwritten by the next one, not piled up)."""
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def replace_private(path: Path, encoding: str = EXCEL_UTF8) -> Iterator[TextIO]:
    """Write a new ``path`` whole: it replaces the old one only when the block ends without an
    exception (then it is on disk); otherwise the old file stays and the partial one is removed.
    A path that is no regular file (``-o /dev/stdout``, a pipe) is written in place instead."""
    if path.exists() and not path.is_file():
        with open(path, "w", encoding=encoding, newline="") as fh:
            yield fh
        return
    tmp = partial_path(path)
    fh = open_private(tmp, encoding=encoding)
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
    fh.close()
    os.replace(tmp, path)
    fsync_dir(path.parent)

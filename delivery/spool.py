"""The spool folder: ``spool/<agency>/<notice-type>/<file>`` is run as a drop, then moved to
``done/`` (processed, even with bad rows) or ``failed/`` (the file as a whole could not run, for
whatever reason: ``shunt``), with its report or a ``.error.txt`` note beside it. To run a failed
file again, move it back into its folder.

Agencies write a file under a temporary name and rename it when complete: names starting with
``.`` or ending in ``.part`` / ``.tmp`` are not picked up (a rename is atomic; a half-copied file
would otherwise be run).

Several nodes may watch one spool (a shared folder): a file is run by the node that claims its
lease (``spool:<agency>/<notice type>/<name>``, renewed while it runs, released once the file is
moved); the others leave it alone. If that node dies, another claims the file once the lease
passed, and its run takes the drop over (delivery/runner.py).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mailserver import datadir
from mailserver.config import Config
from mailserver.registry import Registry
from mailserver.store import leases

from .read import FORMATS
from .deliver import DropTakenOver
from .runner import DropBusy, run_drop
from .shunt import set_aside_reason, store_unavailable

log = logging.getLogger("civicmail.delivery.spool")
DONE, FAILED = "done", "failed"
SUFFIXES = {"." + f for f in FORMATS} | {".ndjson"}


@dataclass(frozen=True)
class SpoolOutcome:
    path: Path
    moved_to: Path
    drop_id: int | None
    error: str | None


def pending_files(spool: Path) -> list[tuple[str, str, Path]]:
    """(agency, notice type, file) for every complete file waiting, oldest first."""
    found = []
    if not spool.is_dir():
        return found
    for agency_dir in sorted(p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for type_dir in sorted(p for p in agency_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in type_dir.iterdir():
                if (f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SUFFIXES
                        and not f.name.endswith((".part", ".tmp"))):
                    found.append((f.stat().st_mtime, agency_dir.name, type_dir.name, f))
    return [(a, t, f) for _, a, t, f in sorted(found)]


def make_folders(config: Config, grants: Iterable[tuple[str, str]]) -> list[Path]:
    """``spool/<agency>/<notice-type>/`` for each (agency, notice type) granted, so that an
    agency's system has its folders to write into from the start (``init``, ``agency grant``).
    Made with the data directory's mode; returns the folders made now."""
    spool = config.data_path(config.delivery.spool_dir)
    made = []
    for agency, notice_type in grants:
        folder = spool / agency / notice_type
        if not folder.is_dir():
            folder.mkdir(mode=datadir.DIR_MODE, parents=True, exist_ok=True)
            made.append(folder)
    return made


def _free_name(folder: Path, name: str) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / name
    if target.exists():
        stem, suffix = os.path.splitext(name)
        target = folder / f"{stem}.{dt.datetime.now():%Y%m%d-%H%M%S-%f}{suffix}"
    return target


def _copy_private(src: Path | None, dst: Path) -> None:
    if src is not None and src.exists():
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o600)


def process_file(reg: Registry, agency: str, notice_type: str, path: Path) -> SpoolOutcome | None:
    """Run one spooled file and move it: to ``failed/`` whatever went wrong, except the store
    being unreachable (raised: the file stays for the next round). None, the file left alone, if
    another node runs it. Blocking: the service calls it in a thread."""
    name, seconds = f"spool:{agency}/{notice_type}/{path.name}"[:400], reg.config.delivery.lease_seconds
    if not leases.claim(reg.store, name, seconds):
        return None
    try:
        with leases.Heartbeat(lambda: leases.renew(reg.store, name, seconds), seconds, name):
            if not path.exists():  # run and moved by the node that held the lease before
                return None
            return _run_file(reg, agency, notice_type, path)
    finally:
        leases.release(reg.store, name, forget=True)


def _run_file(reg: Registry, agency: str, notice_type: str, path: Path) -> SpoolOutcome | None:
    try:
        result = run_drop(reg, path, agency, notice_type, source="spool")
    except (DropBusy, DropTakenOver) as exc:  # another node's run: it moves the file
        log.info("spool %s/%s/%s: left to another node: %s", agency, notice_type, path.name, exc)
        return None
    except Exception as exc:
        if store_unavailable(exc):
            raise
        reason = set_aside_reason(log, f"spool {agency}/{notice_type}/{path.name}", exc)
        target = _free_name(path.parent / FAILED, path.name)
        os.replace(path, target)
        note = target.with_name(target.name + ".error.txt")
        note.write_text(f"{reason}\n", encoding="utf-8")
        return SpoolOutcome(path, target, None, reason)
    target = _free_name(path.parent / DONE, path.name)
    os.replace(path, target)
    _copy_private(result.report_path, target.with_name(target.name + ".report.csv"))
    _copy_private(result.paper_path, target.with_name(target.name + ".paper.csv"))
    log.info("spool %s/%s/%s: drop %s: %s", agency, notice_type, path.name, result.drop_id,
             result.summary.counts_text())
    return SpoolOutcome(path, target, result.drop_id, None)

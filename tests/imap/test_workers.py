"""`serve` with server.workers = 2: two processes serve IMAP on one port (SO_REUSEPORT), and a
session in IDLE in one process is told of mail appended through the other (the folder watcher,
as between nodes). Which process holds a connection is read from /proc, not guessed."""
from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path

import pytest

from mailserver.bench.smtp import start_server, stop_server
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from tests.imap.conftest import PASSWORD, Raw
from tests.serverkit import prepared_city

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo.extend(int(c) for c in task.read_text().split())
    return out


def _owner(server_pid: int, port: int, client: socket.socket) -> int | None:
    """The pid (serve or one of its workers) holding the server side of ``client``'s connection."""
    mine = client.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[2].endswith(f":{mine:04X}"):
            inode = fields[9]
    if inode is None:
        return None
    for pid in _descendants(server_pid):
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def test_idle_in_one_worker_is_told_of_mail_appended_through_another(tmp_path):
    port = _free_port()
    config, user = prepared_city(tmp_path / "data", (), lambda reg: add_citizen(
        reg, "张伟", idnumber.make("330106", dt.date(1980, 1, 2), 7), password=PASSWORD).address)
    proc, _, _, log = start_server(tmp_path / "data" / "civicmail.toml",
                                   (f"imap.listen=127.0.0.1:{port}", "imaps.listen=", "server.workers=2"))
    held: dict[int, list[Raw]] = {}  # per process: an IDLE session and a writer
    others: list[Raw] = []
    try:
        deadline = time.monotonic() + 60
        while sum("imap listening on" in line for line in log) < 2:  # the first process and its worker
            assert time.monotonic() < deadline and proc.poll() is None, "".join(log[-20:])
            time.sleep(0.1)
        # connections until each process holds two (the kernel spreads them by address hash)
        for _ in range(64):
            raw = Raw(port)
            owner = _owner(proc.pid, port, raw.sock)
            if owner is not None and len(held.setdefault(owner, [])) < 2:
                assert raw.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"l OK")
                held[owner].append(raw)
            else:
                others.append(raw)
            if len(held) == 2 and all(len(v) == 2 for v in held.values()):
                break
        assert len(held) == 2 and all(len(v) == 2 for v in held.values()), f"connections per process: {held}"
        assert proc.pid in held  # the first process serves IMAP too
        idlers = []
        for idler, _ in held.values():
            assert idler.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
            idler.send(b"i IDLE\r\n")
            assert idler.line().startswith(b"+")
            idlers.append(idler)
        # append through each process in turn: the IDLE sessions of both hear of each message
        for n, (_, writer) in enumerate(held.values(), start=1):
            message = f"Subject: to every worker {n}\r\n\r\nbody\r\n".encode()
            writer.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
            while not (line := writer.line()).startswith(b"a "):
                pass
            assert line.startswith(b"a OK"), line
            for idler in idlers:
                told = [idler.line() for _ in range(2)]  # EXISTS, RECENT
                assert f"* {n} EXISTS".encode() in b"".join(told), told
    finally:
        for raw in [r for v in held.values() for r in v] + others:
            try:
                raw.close()
            except OSError:
                pass
        assert stop_server(proc, log) == 0
    workers = [line for line in log if "IMAP worker" in line]
    assert workers, log[-20:]

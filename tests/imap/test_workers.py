"""`serve` with server.workers = 2: the first process accepts IMAP connections and hands them in
turn to itself and its worker (imap/handoff.py), and a session in one process is told of mail
appended and flags stored through the other (the folder watcher, as between nodes). The
pre-login cap per address is the server's; a worker's death leaves the server greeting and
logging in, and a new worker is started in its place. Which process holds a connection is read
from /proc, not guessed."""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from mailserver.bench.smtp import start_server, stop_server
from mailserver.identity import idnumber
from mailserver.registry.citizens import add_citizen
from tests.imap.conftest import PASSWORD, Raw
from tests.serverkit import listening_port, prepared_city

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


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


def _city(tmp_path, *settings: str):
    """A city with one citizen and `serve` with two processes, its IMAP port bound to port 0 (the
    port read from its log), once the worker takes connections: (serve's process, its log, the
    port, the citizen's address)."""
    config, user = prepared_city(tmp_path / "data", (), lambda reg: add_citizen(
        reg, "张伟", idnumber.make("330106", dt.date(1980, 1, 2), 7), password=PASSWORD).address)
    proc, _, _, log = start_server(tmp_path / "data" / "civicmail.toml",
                                   ("imap.listen=127.0.0.1:0", "imaps.listen=", "server.workers=2") + settings)
    deadline = time.monotonic() + 60
    while not any("IMAP worker 1 takes connections" in line for line in log):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(log[-20:])
        time.sleep(0.1)
    return proc, log, listening_port(log, "imap"), user


def _close(raws) -> None:
    for raw in raws:
        try:
            raw.close()
        except OSError:
            pass


def test_idle_in_one_worker_is_told_of_mail_appended_through_another(tmp_path):
    proc, log, port, user = _city(tmp_path)
    held: dict[int, list[Raw]] = {}  # per process: an IDLE session and a writer
    try:
        # four connections: handed in turn, two to each process (the kernel's SO_REUSEPORT
        # hash gave ten clients 75% and 25%)
        for _ in range(4):
            raw = Raw(port)
            held.setdefault(_owner(proc.pid, port, raw.sock), []).append(raw)
            assert raw.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"l OK")
        assert sorted(len(v) for v in held.values()) == [2, 2], f"connections per process: {held}"
        assert proc.pid in held and None not in held  # the first process serves IMAP too
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
        for idler in idlers:
            idler.send(b"DONE\r\n")
            while not (line := idler.line()).startswith(b"i "):
                pass
            assert line.startswith(b"i OK"), line
        # a flag stored through each process: the other's session hears of it at NOOP
        for n, ((_, writer), (reader, _)) in enumerate(zip(held.values(), reversed(held.values())), start=1):
            assert writer.command("w", "SELECT INBOX")[-1].startswith(b"w OK")
            assert writer.command("f", f"STORE {n} +FLAGS (\\Flagged)")[-1].startswith(b"f OK")
            deadline = time.monotonic() + 30
            while True:
                told = reader.command("n", "NOOP")
                if any(b"FETCH" in ln and b"\\Flagged" in ln for ln in told):
                    break
                assert time.monotonic() < deadline, told
                time.sleep(0.05)
            assert any(ln.startswith(f"* {n} FETCH".encode()) for ln in told), told
    finally:
        _close([r for v in held.values() for r in v])
        assert stop_server(proc, log) == 0
    workers = [line for line in log if "IMAP worker" in line]
    assert workers, log[-20:]
    assert not any("channel closed" in line or "is gone" in line for line in log), log[-20:]  # a stop is no worker's death


def test_pre_login_cap_per_address_is_the_servers(tmp_path):
    """imap.max_preauth_connections_per_ip = 2 over two processes: a third connection before
    login is refused whichever process it would go to; a login in the worker gives its place
    back to the first process, which then admits another."""
    proc, log, port, user = _city(tmp_path, "imap.max_preauth_connections_per_ip=2")
    raws: list[Raw] = []
    try:
        raws += [Raw(port), Raw(port)]
        owners = [_owner(proc.pid, port, r.sock) for r in raws]
        assert proc.pid in owners and len(set(owners)) == 2, owners
        assert all(r.greeting.startswith(b"* OK") for r in raws)
        for _ in range(2):  # refused at accept, whichever process the turn would give them
            refused = Raw(port)
            raws.append(refused)
            assert refused.greeting.startswith(b"* BYE"), refused.greeting
        in_worker = raws[owners.index(next(o for o in owners if o != proc.pid))]
        assert in_worker.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"l OK")
        deadline = time.monotonic() + 30
        while not (admitted := Raw(port)).greeting.startswith(b"* OK"):  # the worker's message is on its way
            raws.append(admitted)
            assert time.monotonic() < deadline, admitted.greeting
            time.sleep(0.05)
        raws.append(admitted)
        assert Raw(port).greeting.startswith(b"* BYE")  # two before login again: the cap holds
    finally:
        _close(raws)
        assert stop_server(proc, log) == 0


def _admitted(port: int, deadline: float) -> Raw:
    """A connection greeted with OK, retried while the pre-login cap refuses it."""
    while not (raw := Raw(port)).greeting.startswith(b"* OK"):
        assert time.monotonic() < deadline, raw.greeting
        raw.close()
        time.sleep(0.05)
    return raw


def _wait_for(log: list[str], text: str, count: int, proc) -> None:
    deadline = time.monotonic() + 60
    while sum(text in line for line in log) < count:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(log[-20:])
        time.sleep(0.1)


def test_a_dead_worker_leaves_the_server_serving_and_is_replaced(tmp_path):
    """server.worker_respawn_delay and _max set: the waits before each replacement are theirs."""
    proc, log, port, user = _city(tmp_path, "imap.max_preauth_connections_per_ip=2", "server.worker_respawn_delay=1.25",
                                  "server.worker_respawn_max=1.75")
    raws: list[Raw] = []
    try:
        raws += [Raw(port), Raw(port)]  # one in each process, not logged in: the cap is full
        owners = [_owner(proc.pid, port, r.sock) for r in raws]
        worker = next(o for o in owners if o != proc.pid)
        os.kill(worker, signal.SIGKILL)
        assert raws[owners.index(worker)].line() == b""  # its connection died with it
        # its place comes back to the first process, which serves the next connection at once
        raw = _admitted(port, time.monotonic() + 30)
        raws.append(raw)
        assert _owner(proc.pid, port, raw.sock) == proc.pid
        assert raw.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"l OK")
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")

        # a new worker is started in its place, after server.worker_respawn_delay, and takes its turns again
        _wait_for(log, "IMAP worker 1 is gone: another is started in its place in 1.25 s", 1, proc)
        _wait_for(log, "IMAP worker 1 takes connections", 2, proc)
        assert any("started pid" in line and "signal 9" in line for line in log), log[-20:]
        seen = set()
        for _ in range(4):
            raw = _admitted(port, time.monotonic() + 30)
            raws.append(raw)
            seen.add(owner := _owner(proc.pid, port, raw.sock))
            assert raw.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"l OK")
            assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK"), owner
        assert proc.pid in seen and len(seen) == 2, seen
        (new,) = seen - {proc.pid}
        assert new != worker and new in _descendants(proc.pid)

        # one that dies young waits twice as long before the next is started, up to server.worker_respawn_max
        os.kill(new, signal.SIGKILL)
        _wait_for(log, "another is started in its place in 1.75 s", 1, proc)
        assert proc.poll() is None
    finally:
        _close(raws)
        assert stop_server(proc, log) == 0  # with a start still pending
    assert any("channel closed" in line for line in log), log[-20:]
    assert sum("takes connections" in line for line in log) == 2, log[-20:]  # none started while stopping


def test_per_user_cap_is_the_servers(tmp_path):
    """imap.max_connections_per_user_ip counts logins in every process together; a dead
    worker's places come back."""
    proc, log, port, user = _city(tmp_path, "imap.max_connections_per_user_ip=2")
    raws: list[Raw] = []

    def login(raw: Raw) -> bytes:
        return raw.command("l", f'LOGIN "{user}" "{PASSWORD}"')[-1]

    try:
        raws += [Raw(port), Raw(port)]
        owners = [_owner(proc.pid, port, r.sock) for r in raws]
        assert proc.pid in owners and len(set(owners)) == 2, owners  # one in each process
        for raw in raws:
            assert login(raw).startswith(b"l OK")
        # a third, in either process, is over the server's cap (each process holds only one)
        for _ in range(2):
            third = Raw(port)
            raws.append(third)
            refused = login(third)
            assert refused.startswith(b"l NO [LIMIT]"), refused
            assert third.command("n", "NOOP")[-1].startswith(b"n OK")  # the session goes on
        # the worker's session logs out: its place comes back for a login in either process
        worker = next(o for o in owners if o != proc.pid)
        leaving = raws[owners.index(worker)]
        assert leaving.command("o", "LOGOUT")[-1].startswith(b"o OK")
        deadline = time.monotonic() + 30
        while not (answer := login(raws[-1])).startswith(b"l OK"):
            assert time.monotonic() < deadline and answer.startswith(b"l NO [LIMIT]"), answer
            time.sleep(0.05)
        # a worker holding a logged-in place dies: the place comes back
        held = next((r for r in raws[2:] if _owner(proc.pid, port, r.sock) == worker), None)
        if held is None:  # the login above was in the first process: log one in through the worker
            assert raws[-1].command("o", "LOGOUT")[-1].startswith(b"o OK")
            while _owner(proc.pid, port, (held := Raw(port)).sock) != worker:
                raws.append(held)
            raws.append(held)
            while not (answer := login(held)).startswith(b"l OK"):
                assert time.monotonic() < deadline and answer.startswith(b"l NO [LIMIT]"), answer
                time.sleep(0.05)
        refused = login(extra := Raw(port))
        raws.append(extra)
        assert refused.startswith(b"l NO [LIMIT]"), refused
        os.kill(worker, signal.SIGKILL)
        while not (answer := login(extra)).startswith(b"l OK"):
            assert time.monotonic() < deadline and answer.startswith(b"l NO [LIMIT]"), answer
            time.sleep(0.05)
    finally:
        _close(raws)
        assert stop_server(proc, log) == 0


def test_imaps_connections_are_handed_over_too(tmp_path):
    """On the implicit-TLS port the serving process takes its gate's place and runs the handshake."""
    import imaplib
    import ssl

    proc, log, port, user = _city(tmp_path, "imaps.listen=127.0.0.1:0")
    tls_port = listening_port(log, "imaps")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    clients = []
    try:
        for _ in range(2):
            client = imaplib.IMAP4_SSL("127.0.0.1", tls_port, ssl_context=context, timeout=30)
            clients.append(client)
            assert client.login(user, PASSWORD)[0] == "OK"
        owners = {_owner(proc.pid, tls_port, client.sock) for client in clients}
        assert len(owners) == 2 and proc.pid in owners, owners
        for client in clients:
            assert client.select("INBOX")[0] == "OK"
    finally:
        for client in clients:
            client.logout()
        assert stop_server(proc, log) == 0


def _handoff_services(role: str, channels, *settings: str, respawn=None) -> list:
    """The IMAP services listener_services makes for ``role`` ("accept": the first process's hub;
    "work": a worker's listener and its end) from a configuration with ``settings``, as serve
    makes them, over real channels (Unix socket pairs); nothing listens."""
    from types import SimpleNamespace

    from mailserver import config as config_mod
    from mailserver.imap.service import listener_services

    ctx = SimpleNamespace(config=config_mod.build({}, settings), handoff=(role, channels), stopping=False,
                          respawn_worker=respawn)
    return listener_services(ctx, [("127.0.0.1:0", False, "imap")] if role == "work" else [])


@pytest.mark.parametrize("steady, second", [(3600, "0.5 s"), (0.001, "0.3 s")])
def test_a_replacements_waits_are_the_configurations(caplog, steady, second):
    """server.worker_respawn_delay, _steady and _max reach the first process's hub: a worker that
    dies waits delay; its replacement dying within steady of its start waits twice that, up to
    max; one that lived longer than steady waits delay again."""
    import asyncio
    import logging

    from mailserver.imap.handoff import channel_pair

    ends: list[socket.socket] = []  # the workers' ends of the channels

    def respawn(number: int) -> socket.socket:  # a new "worker": a new channel
        first, end = channel_pair()
        ends.append(end)
        return first

    first, end = channel_pair()
    ends.append(end)
    (hub,) = _handoff_services("accept", [first], "server.worker_respawn_delay=0.3",
                               f"server.worker_respawn_steady={steady}", "server.worker_respawn_max=0.5",
                               respawn=respawn)
    gone = "IMAP worker 1 is gone: another is started in its place in"

    async def scenario() -> list[str]:
        await hub.start()
        deadline = time.monotonic() + 30
        for n in (1, 2):
            ends[-1].close()  # the worker died
            while len(ends) == n:  # until its replacement's channel is made
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            while len(hub.channels) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)  # the replacement lives a little (longer than a tiny steady)
        await hub.stop()
        return [r.getMessage() for r in caplog.records if gone in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="civicmail.imap"):
        waits = asyncio.run(scenario())
    for sock in ends:
        sock.close()
    assert waits == [f"{gone} 0.3 s", f"{gone} {second}"], waits


def test_a_workers_login_waits_for_its_place_as_long_as_configured(caplog):
    """imap.handoff_ask_timeout reaches a worker's per-user places: a first process that does not
    answer refuses the login after that long (the log says how long)."""
    import asyncio
    import logging

    from mailserver.imap.handoff import channel_pair

    first, end = channel_pair()  # the first process's end stays silent
    service, worker = _handoff_services("work", end, "imap.handoff_ask_timeout=0.2")

    async def scenario() -> bool:
        await worker.start()
        try:
            return await service.users.ask("1 127.0.0.1")
        finally:
            await worker.stop()

    with caplog.at_level(logging.WARNING, logger="civicmail.imap"):
        granted = asyncio.run(scenario())
    asked = first.recv(256)
    first.close()
    assert granted is False and asked.startswith(b"R "), asked  # ready, then asked ("U 1 ...")
    assert any("did not answer a login's place within 0.2 s" in r.getMessage() for r in caplog.records), caplog.text

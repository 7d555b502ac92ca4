"""`civicmail serve` as operators run it: a subprocess, its log lines, SIGTERM, startup errors,
and kill -9 in the middle of transactions."""
from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading

import pytest

from mailserver.bench.smtp import PORT_ZERO, start_server, stop_server
from mailserver.provision import prepare
from mailserver.registry import Registry
from mailserver.store import open_store
from tests.conftest import make_config

from .conftest import RunningServer, message, populate


@pytest.fixture
def data_dir(tmp_path):
    config = make_config(tmp_path / "data")
    prepare(config)
    store = open_store(config)
    try:
        people = populate(Registry(config, store))
    finally:
        store.dispose()
    return config, people


def serve_cmd(config, *overrides: str) -> list[str]:
    cmd = [sys.executable, "-m", "mailserver.cli", "-c", str(config.source)]
    for o in PORT_ZERO + overrides:
        cmd += ["--set", o]
    return cmd + ["serve"]


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_serve_logs_each_listener_and_exits_0_on_sigterm(data_dir, event_loop):
    config, people = data_dir
    proc, host, port, log = start_server(config.source, (f"server.event_loop={event_loop}",))
    try:
        text = "".join(log)
        assert f"event loop: {event_loop}" in text
        for kind in ("smtp", "submission", "submissions"):
            assert f"SMTP {kind} listening on 127.0.0.1:" in text
        with smtplib.SMTP(host, port, timeout=30) as c:
            c.sendmail("someone@example.org", [people.alice], message("someone@example.org", people.alice, "served"))
    finally:
        assert stop_server(proc, log) == 0
    assert "shutting down" in "".join(log)
    assert any("stored" in line and f"to=<{people.alice}>" in line for line in log)
    assert not any("ID number" in line or "Subject" in line for line in log)


def test_client_input_cannot_forge_or_colour_a_log_line(data_dir):
    """A CR or ESC in an address's quoted local part reaches the log escaped: every line of the
    log is a record of its own (it starts with the date) and no terminal escape gets through."""
    config, people = data_dir
    forged_line = "2026-01-01 00:00:00,000 INFO civicmail.smtp: 0001 stored client=10.0.0.1"
    proc, host, port, log = start_server(config.source)
    try:
        with socket.create_connection((host, port), timeout=30) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220")
            sock.sendall(b"HELO attacker\r\n")
            assert f.readline().startswith(b"250")
            sock.sendall(b'MAIL FROM:<"evil\x1b[2J\x1b]0;pwned\x07"@example.org>\r\n')
            assert f.readline().startswith(b"250")
            sock.sendall(f'RCPT TO:<"nobody\r{forged_line}\x1b[0m"@{people.alice.partition("@")[2]}>\r\n'.encode())
            assert f.readline().startswith(b"550 5.1.1")
            sock.sendall(b"QUIT\r\n")
            assert f.readline().startswith(b"221")
    finally:
        assert stop_server(proc, log) == 0
    [refused] = [line for line in log if "refused (unknown user)" in line]
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07" in refused and f"nobody\\r{forged_line}\\x1b[0m" in refused
    text = "".join(log)
    assert not set(text) & {"\r", "\x1b", "\x07"}
    assert all(line[:4].isdigit() or line.startswith("  ") for line in log), [line for line in log if
                                                                            not line[:4].isdigit()]


def test_an_id_number_a_client_sends_is_hidden_in_the_log(data_dir):
    """People write to their ID number as if it were their address: the refusal is logged, and
    the number in it is hidden like every ID number civicmail writes (issue 11, item 17)."""
    config, people = data_dir
    number = "330102196804120318"
    domain = people.alice.partition("@")[2]
    proc, host, port, log = start_server(config.source)
    try:
        with smtplib.SMTP(host, port, timeout=30) as c:
            c.ehlo("mx.example.org")
            c.mail(f"{number}@example.org")
            assert c.rcpt(f"{number}@{domain}")[0] == 550
            assert c.rcpt(f"{number[:6]}-{number[6:14]}-{number[14:]}@{domain}")[0] == 550
    finally:
        assert stop_server(proc, log) == 0
    refused = [line for line in log if "refused (unknown user)" in line]
    assert len(refused) == 2 and all("long number hidden" in line for line in refused), refused
    assert number[6:14] not in "".join(log)


def test_a_stop_that_hangs_reports_where_each_thread_and_task_waits():
    """serve's stop watchdog, in a process of its own: a task and a thread that never finish."""
    script = """if True:
        import asyncio, sys, threading, time
        from mailserver.server import _stop_watchdog
        def blocked_worker():
            threading.Event().wait()
        async def stuck_task():
            await asyncio.Event().wait()
        async def main():
            threading.Thread(target=blocked_worker, daemon=True).start()
            task = asyncio.ensure_future(stuck_task())
            _stop_watchdog(asyncio.get_running_loop(), 0.2)
            await asyncio.sleep(2)
            task.cancel()
        asyncio.run(main())
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "civicmail: still stopping after 0.2 s" in done.stderr
    assert "in blocked_worker" in done.stderr  # faulthandler's line for the other thread
    assert "stuck_task" in done.stderr  # the pending task's stack, listed from the loop


def test_port_in_use_is_a_clear_error(data_dir):
    config, _ = data_dir
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(serve_cmd(config, f"smtp.listen=127.0.0.1:{port}"), capture_output=True, text=True,
                                timeout=120)
    assert result.returncode != 0
    assert f"smtp.listen = 127.0.0.1:{port}: cannot listen: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_certificate_is_a_clear_error(data_dir):
    config, _ = data_dir
    os.remove(config.data_path(config.tls.cert))
    result = subprocess.run(serve_cmd(config), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "TLS certificate" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_kill_9_during_transactions_loses_no_acknowledged_message(data_dir):
    config, people = data_dir
    proc, host, port, _ = start_server(config.source)
    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def sender(n: int) -> None:
        try:
            with smtplib.SMTP(host, port, timeout=30) as c:
                for i in range(10_000):
                    subject = f"k{n}-{i}"
                    c.sendmail("someone@example.org", [people.alice, people.bob],
                               message("someone@example.org", people.alice, subject))
                    with lock:
                        acknowledged.append(subject)
                        if len(acknowledged) >= 150:
                            enough.set()
        except (smtplib.SMTPException, OSError):
            pass  # the server died under us: only what was acknowledged counts

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(120), "senders made no progress"
        proc.send_signal(signal.SIGKILL)  # mid-stream: several sessions are inside DATA
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        for t in threads:
            t.join(60)
    with lock:
        acked = set(acknowledged)
    store = open_store(config)
    try:
        for address in (people.alice, people.bob):
            holder = RunningServer(config, people)
            holder.ctx = type("Ctx", (), {"store": store})()
            subjects = [m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in holder.inbox(address)]
            assert acked <= set(subjects)  # every acknowledged message survived
            assert len(subjects) == len(set(subjects))  # and none twice
    finally:
        store.dispose()

"""`civicmail bench smtp`: messages per second accepted over SMTP *and stored* in mailboxes.

Starts `civicmail serve` on loopback over a fresh data directory (its own process, as in
production), sends N messages of about 4 KB over C persistent sessions (PIPELINING: MAIL, RCPT
and DATA in one write), then stops the server and counts the messages in the store. The clock
runs from the first connection to the last ``250`` after DATA: a ``250`` is sent only after the
commit, so every message counted was in its mailbox by then.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from sqlalchemy import func, select

from .. import config as config_mod
from ..identity import idnumber
from ..registry import Registry
from ..store import open_store
from ..store.models import Message
from .util import store_url_option, throwaway_store

RECIPIENTS = 100
LISTENING = re.compile(r"SMTP smtp listening on ([\d.]+):(\d+)")
PORT_ZERO = ("smtp.listen=127.0.0.1:0", "submission.listen=127.0.0.1:0", "submissions.listen=127.0.0.1:0",
             "imap.listen=127.0.0.1:0", "imaps.listen=127.0.0.1:0", "http.listen=127.0.0.1:0",
             "http.metrics_listen=127.0.0.1:0")


@dataclass
class SmtpBenchResult:
    messages: int
    concurrency: int
    message_bytes: int
    seconds: float
    accepted: int
    stored: int
    engine: str = "SQLite"

    @property
    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"bench smtp ({self.engine}): {self.messages:,} messages of {self.message_bytes / 1024:.1f} KB over "
                f"{self.concurrency} sessions: {self.accepted:,} accepted, {self.stored:,} stored, in "
                f"{self.seconds:.2f} s = {self.rate:,.0f} messages/s accepted and stored")


def make_message(n: int, to: str, size: int = 4096, sender: str = "sender@bench.example",
                 message_id: str = "") -> bytes:
    """About ``size`` bytes of plain text from ``sender`` to ``to`` (Message-ID ``message_id``,
    default ``bench.N@bench.example``)."""
    head = (f"From: Sender <{sender}>\r\nTo: <{to}>\r\nSubject: bench message {n}\r\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0800\r\nMessage-ID: <{message_id or f'bench.{n}@bench.example'}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog, and the city mails its notices on time.\r\n"
    room = max(size - len(head), 0)
    body = line * (room // len(line))
    if room - len(body) >= 2:  # a shorter last line; never cut inside a line (a bare CR is refused)
        body += "x" * (room - len(body) - 2) + "\r\n"
    return (head + body).encode()


def prepare_city(data_dir: Path, store_url: str = "") -> list[str]:
    """A fresh data directory with RECIPIENTS citizens (its store at ``store_url``, the SQLite file
    in it if empty); returns their addresses."""
    from ..provision import prepare, write_config
    from ..registry.citizens import add_citizen

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "civicmail.toml"
    write_config(path, "bench.example.cn", "mail.bench.example.cn", store_url)
    config = config_mod.load(path, ("passwords.memory_cost_kib=1024", "passwords.time_cost=1"))
    prepare(config)
    store = open_store(config)
    try:
        reg = Registry(config, store)
        return [add_citizen(reg, "市民", idnumber.make("330106", dt.date(1950, 1, 1) + dt.timedelta(days=i), 100),
                            password="bench-password").address for i in range(RECIPIENTS)]
    finally:
        store.dispose()


async def _session(host: str, port: int, jobs: list[tuple[str, bytes]]) -> int:
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.example\r\n")
    await reply()
    accepted = 0
    for to, raw in jobs:
        writer.write(f"MAIL FROM:<sender@bench.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
        mail, rcpt, data = await reply(), await reply(), await reply()
        if not (mail.startswith(b"250") and rcpt.startswith(b"250") and data.startswith(b"354")):
            raise RuntimeError(f"unexpected replies {mail!r} {rcpt!r} {data!r}")
        writer.write(raw + b".\r\n")
        if (await reply()).startswith(b"250"):
            accepted += 1
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()
    await writer.wait_closed()
    return accepted


async def _send_all(host: str, port: int, messages: int, concurrency: int, recipients: list[str]) -> tuple[int, float]:
    jobs: list[list[tuple[str, bytes]]] = [[] for _ in range(concurrency)]
    for n in range(messages):
        to = recipients[n % len(recipients)]
        jobs[n % concurrency].append((to, make_message(n, to)))
    started = time.monotonic()
    counts = await asyncio.gather(*(_session(host, port, j) for j in jobs))
    return sum(counts), time.monotonic() - started


def start_server(config_path: Path, extra: tuple[str, ...] = (),
                 profile: Path | None = None) -> tuple[subprocess.Popen, str, int, list[str]]:
    """`civicmail serve` in a subprocess; returns it with the inbound host and port it bound.
    With PROFILE, the server runs under cProfile (its main thread: the event loop) and writes
    its statistics there when it stops."""
    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    cmd = python + ["-m", "mailserver.cli", "-c", str(config_path)]
    for o in PORT_ZERO + extra:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd + ["serve"], stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log: list[str] = []
    found: dict[str, tuple[str, int]] = {}
    ready = threading.Event()

    def pump() -> None:  # keep reading so the server never blocks on a full pipe
        assert proc.stderr is not None
        for raw in proc.stderr:  # lines as written: split at LF only (text mode would split at a CR too)
            line = raw.decode("utf-8", "backslashreplace")
            log.append(line)
            m = LISTENING.search(line)
            if m:
                found["smtp"] = (m.group(1), int(m.group(2)))
            if "civicmail ready" in line:
                ready.set()
        ready.set()
        proc.log_read.set()  # type: ignore[attr-defined]

    proc.log_read = threading.Event()  # type: ignore[attr-defined]  # set at the end of its stderr
    threading.Thread(target=pump, daemon=True).start()
    ready.wait(120)
    if "smtp" not in found:
        proc.kill()
        raise RuntimeError("civicmail serve did not start:\n" + "".join(log[-20:]))
    return proc, found["smtp"][0], found["smtp"][1], log


def stop_server(proc: subprocess.Popen, log: list[str], timeout: float = 60) -> int:
    """SIGTERM a server from start_server and wait for its exit status, and for the last line of
    its log to be read into LOG. If it has not exited within TIMEOUT, kill it and fail with the
    end of its log, which holds serve's report of where each thread was (server.STOP_REPORT_AFTER)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"civicmail serve did not stop within {timeout:g} s of SIGTERM:\n"
                             + "".join(log[-150:])) from None
    # the log's last lines may still be on their way through the pipe: the caller reads them next
    log_read = getattr(proc, "log_read", None)
    if log_read is not None:
        log_read.wait(30)
    return code


def run(messages: int, concurrency: int, data_dir: Path, store_url: str = "", bodies: str = "local",
        overrides: tuple[str, ...] = ()) -> SmtpBenchResult:
    recipients = prepare_city(data_dir, store_url)
    config_path = data_dir / "civicmail.toml"
    # One client address sends everything: lift the per-IP message rate limit for the run.
    proc, host, port, _ = start_server(config_path, ("smtp.max_messages_per_ip_per_minute=100000000",
                                                     f"blobs.backend={bodies}", *overrides))
    try:
        accepted, seconds = asyncio.run(_send_all(host, port, messages, concurrency, recipients))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    config = config_mod.load(config_path)
    store = open_store(config)
    try:
        with store.reader() as s:
            stored = s.scalar(select(func.count()).select_from(Message)) or 0
    finally:
        store.dispose()
    engine = "PostgreSQL" if store_url else "SQLite"
    return SmtpBenchResult(messages, concurrency, len(make_message(0, recipients[0])), seconds, accepted, stored,
                           f"{engine}, bodies in the {'database' if bodies == 'database' else 'local blob store'}")


@click.command("smtp")
@click.option("--messages", default=10_000, show_default=True, help="messages to send")
@click.option("--concurrency", default=20, show_default=True, help="parallel SMTP sessions")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="data directory to use (default: a temporary one, removed afterwards)")
@click.option("--bodies", type=click.Choice(["local", "database"]), default="local", show_default=True,
              help="where message bodies go: the local blob store, or the database (blobs.backend)")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="configuration override for the server (repeatable), e.g. blobs.sync=file")
@store_url_option
def command(messages: int, concurrency: int, work_dir: Path | None, store_url: str, bodies: str,
            overrides: tuple[str, ...]) -> None:
    """Start `civicmail serve` on loopback and time MESSAGES ~4 KB messages over CONCURRENCY
    sessions, accepted and stored in mailboxes (SQLite, synchronous=FULL, or PostgreSQL)."""
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-smtp-") as tmp, throwaway_store(store_url) as url:
        result = run(messages, concurrency, (work_dir or Path(tmp)) / "data", url, bodies, overrides)
    click.echo(result.line())

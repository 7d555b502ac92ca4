"""`civicmail bench cluster --nodes N`: N `civicmail serve` nodes on one PostgreSQL (issue 13).

One data set: a city of --users citizens with passwords, --rows more registered in bulk (the
drop's), and the three agencies of the demo. Each node is a `serve` process with its own data
directory (a copy of the first: the same keys and certificates) and its own ports; all share one
database (a throwaway one by default) and one spool folder (a network folder in production).
Three stages, each checked against the store at its end:

1. SMTP: --concurrency sessions of authenticated submission spread over the nodes (PIPELINING,
   a 4 KB message at a time) for --seconds; messages/s, and every message answered ``250`` found
   exactly once in its recipient's INBOX, none stored that was not accepted.
2. IDLE across nodes: one session per citizen IDLEs on node k % N while mail for that citizen
   goes in through node (k + 1) % N (inbound SMTP), one probe at a time for --seconds. Latency
   from the end of DATA on the sending node to the ``EXISTS`` on the IDLE session (the store's
   commit and the notice between nodes), and from the sending node's ``250``; bar: the median
   under 100 ms.
3. A drop through all the nodes at once: the --rows rows as two files in the shared spool (one
   forwards, one backwards) and mailed to drops@ by the agency through the last node (from the
   middle): three overlapping drops that the nodes' watchers run at the same time. Notices/s,
   every row delivered exactly once, every drop done, the agency answered with exactly one summary.

After each stage: the nodes' CPU, and the change notifications each node received from PostgreSQL
in it (its /metrics): a node LISTENs only to the channels of the folders its sessions watch.

The table ends with the checks; a failed check makes the exit status 1.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import random
import re
import shutil
import signal
import smtplib
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click

from .imap import LineClient
from .pipeline import AGENCY, NOTICE_TYPE, write_drop
from .smtp import make_message, start_server
from .util import CLOCK_TICKS, citizen_name, cpu_ticks, throwaway_store, write_citizens_csv

DOMAIN, HOSTNAME = "bench.example.cn", "mail.bench.example.cn"
PASSWORD, AGENCY_PASSWORD = "bench-password", "bench-agency-password"
DEFAULT_STORE = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: a cheap argon2id for the bench's citizens and agencies (logins are not what is measured)
CHEAP_HASH = ("passwords.memory_cost_kib=1024", "passwords.time_cost=1")
#: every node: the bench's clients all come from 127.0.0.1
NODE_SETTINGS = ("smtp.max_messages_per_ip_per_minute=100000000", "smtp.max_connections_per_ip=100000",
                 "imap.max_connections_per_user_ip=100000", "imap.max_preauth_connections_per_ip=100000")
SUBMISSION = re.compile(r"SMTP submission listening on ([\d.]+):(\d+)")
IMAP = re.compile(r"imap listening on ([\d.]+):(\d+)")
METRICS = re.compile(r"Prometheus metrics listening on ([\d.]+):(\d+)")
RECEIVED = re.compile(r"^civicmail_store_notifications_received_total (\S+)$", re.M)
#: the IDLE stage's bar (issue 13), its fewest probes, how long one may wait for its 250 and its notice,
#: and how much longer a late one is waited for (to tell a late notice from one never sent)
IDLE_BAR_MS, MIN_PROBES, PROBE_TIMEOUT, LATE_TIMEOUT = 100.0, 10, 10.0, 40.0
SMTP_TAG, PROBE_TAG = "cluster-smtp", "cluster-idle"


@dataclass
class Node:
    name: str
    proc: object
    log: list[str]
    smtp: tuple[str, int]
    submission: tuple[str, int]
    imap: tuple[str, int]
    #: its /metrics listener (None with http.metrics off)
    metrics: tuple[str, int] | None = None


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Report:
    figures: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(what, bool(ok), detail))


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# -- the data set and the nodes ---------------------------------------------------------------------

@dataclass
class City:
    root: Path
    configs: list[Path]
    users: list[str]
    drop_csv: Path
    spool: Path


def prepare_city(root: Path, store_url: str, nodes: int, users: int, rows: int) -> City:
    """The first node's data directory (its store at ``store_url``): the demo's agencies with their
    grants and a known password, USERS citizens with passwords, ROWS citizens imported in bulk and
    a drop of one row for each; then a copy of that directory for every other node."""
    from delivery.catalog import load_agencies, load_catalog

    from .. import config as config_mod
    from ..identity import idnumber
    from ..provision import prepare, write_config
    from ..registry import Registry
    from ..registry.agencies import add_agency, grant
    from ..registry.bulk import import_file
    from ..registry.citizens import add_citizen
    from ..store import open_store

    first = root / "node-a"
    first.mkdir(parents=True)
    path = first / "civicmail.toml"
    write_config(path, DOMAIN, HOSTNAME, store_url)
    config = config_mod.load(path, CHEAP_HASH)
    prepare(config)
    store = open_store(config)
    try:
        reg = Registry(config, store)
        catalog = load_catalog(config.templates_dir)
        for agency_id, info in load_agencies(config.templates_dir).items():
            add_agency(reg, agency_id, info["name"], [info["sender"]], AGENCY_PASSWORD, actor="bench cluster")
            grant(reg, agency_id, sorted(d.id for d in catalog.values() if d.agency == agency_id),
                  actor="bench cluster")
        rng = random.Random(13)
        addresses = [add_citizen(reg, citizen_name(rng), idnumber.make("330106", dt.date(1950, 1, 1)
                                                                       + dt.timedelta(days=i), 100),
                                 password=PASSWORD, actor="bench cluster").address for i in range(users)]
        citizens_csv, drop_csv = root / "citizens.csv", root / "drop.csv"
        write_citizens_csv(citizens_csv, rows, seed=13)
        imported = import_file(reg, citizens_csv, None).imported
        write_drop(citizens_csv, drop_csv)
    finally:
        store.dispose()
    configs = [path]
    for i in range(1, nodes):
        copy = root / f"node-{_node_name(i)}"
        shutil.copytree(first, copy)
        configs.append(copy / "civicmail.toml")
    click.echo(f"setup: the demo's agencies, {users:,} citizens with passwords and {imported:,} more for a drop "
               f"of {rows:,} rows; {nodes} data directories")
    return City(root, configs, addresses, drop_csv, root / "spool")


def _node_name(i: int) -> str:
    return chr(ord("a") + i) if i < 26 else f"n{i}"


def _address(pattern: re.Pattern, log: list[str]) -> tuple[str, int]:
    m = pattern.search("".join(log))
    if m is None:
        raise RuntimeError(f"no line matching {pattern.pattern!r} in the node's log:\n" + "".join(log[-20:]))
    return m.group(1), int(m.group(2))


def start_nodes(city: City, overrides: tuple[str, ...]) -> list[Node]:
    """Every node's `civicmail serve`, started at once (each on ports of its own)."""
    settings = NODE_SETTINGS + (f"delivery.spool_dir={city.spool}",) + overrides
    with ThreadPoolExecutor(len(city.configs)) as pool:
        futures = [pool.submit(start_server, path, settings) for path in city.configs]
    started, errors = [], []
    for i, future in enumerate(futures):
        try:
            proc, host, port, log = future.result()
            metrics = METRICS.search("".join(log))
            started.append(Node(_node_name(i), proc, log, (host, port), _address(SUBMISSION, log),
                                _address(IMAP, log), (metrics.group(1), int(metrics.group(2))) if metrics else None))
        except Exception as exc:
            errors.append(exc)
            if future.exception() is None:  # started, but its listeners could not be read
                future.result()[0].kill()
    if errors:
        stop_nodes(started)
        raise errors[0]
    for node in started:
        click.echo(f"node {node.name}: pid {node.proc.pid}, SMTP {node.smtp[1]}, submission {node.submission[1]}, "
                   f"IMAP {node.imap[1]}")
    return started


def nodes_cpu(nodes: list[Node]) -> float:
    """User + system CPU seconds of the nodes' processes and of their finished children (the
    workers of a drop), from /proc."""
    total = 0
    for node in nodes:
        ticks = cpu_ticks(node.proc.pid)
        if ticks is not None:
            total += sum(ticks)  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def notifications_received(nodes: list[Node]) -> list[int | None]:
    """Each node's change notifications received from PostgreSQL so far (its LISTEN thread, read
    from its /metrics); None where that cannot be read."""
    import urllib.request

    out: list[int | None] = []
    for node in nodes:
        try:
            with urllib.request.urlopen(f"http://{node.metrics[0]}:{node.metrics[1]}/metrics", timeout=30) as reply:
                out.append(int(float(RECEIVED.search(reply.read().decode()).group(1))))
        except Exception:  # no metrics listener, or no LISTEN thread: not told
            out.append(None)
    return out


def _received_text(nodes: list[Node], before: list[int | None], after: list[int | None]) -> str:
    return ", ".join(f"node {node.name} " + (f"{a - b:,}" if a is not None and b is not None else "unknown")
                     for node, b, a in zip(nodes, before, after))


def stop_nodes(nodes: list[Node]) -> list[int | None]:
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    codes = []
    for node in nodes:
        try:
            codes.append(node.proc.wait(120))
        except Exception:
            node.proc.kill()
            codes.append(None)
    return codes


# -- clients ----------------------------------------------------------------------------------------

class SmtpClient:
    """A minimal SMTP client (the hot loops need no library's overhead)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> "SmtpClient":
        reader, writer = await asyncio.open_connection(*address)
        c = cls(reader, writer)
        await c.reply()
        await c.command("EHLO bench.example")
        return c

    async def reply(self) -> bytes:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line[3:4] != b"-":
                return line

    async def command(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        return await self.reply()

    async def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        answer = await self.command(f"AUTH PLAIN {token}")
        if not answer.startswith(b"235"):
            raise RuntimeError(f"AUTH as {user}: {answer!r}")

    async def begin(self, sender: str, to: str) -> None:
        """MAIL, RCPT and DATA in one write (PIPELINING), up to the 354."""
        self.writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
        mail, rcpt, data = await self.reply(), await self.reply(), await self.reply()
        if not (mail.startswith(b"250") and rcpt.startswith(b"250") and data.startswith(b"354")):
            raise RuntimeError(f"unexpected replies {mail!r} {rcpt!r} {data!r}")

    async def close(self) -> None:
        try:
            await self.command("QUIT")
        except (ConnectionError, OSError):
            pass
        self.writer.close()


# -- 1. SMTP ------------------------------------------------------------------------------------------

async def _submitter(node: Node, user: str, recipients: list[str], deadline: float, tag: str,
                     rng: random.Random) -> tuple[list[tuple[str, str]], Counter]:
    """Messages from ``user`` through ``node``'s submission until ``deadline``: the (Message-ID,
    recipient) of each answered 250, and the other answers (their codes) counted."""
    c = await SmtpClient.connect(node.submission)
    await c.login(user, PASSWORD)
    accepted, refused, n = [], Counter(), 0
    while time.monotonic() < deadline:
        to = rng.choice(recipients)
        message_id = f"{SMTP_TAG}.{tag}.{n}@bench.example"
        n += 1
        await c.begin(user, to)
        c.writer.write(make_message(n, to, sender=user, message_id=message_id) + b".\r\n")
        answer = await c.reply()
        if answer.startswith(b"250"):
            accepted.append((message_id, to))
        else:
            refused[answer[:3].decode(errors="replace")] += 1
    await c.close()
    return accepted, refused


async def _submit_all(nodes: list[Node], users: list[str], concurrency: int,
                      seconds: float) -> tuple[list[list[tuple[str, str]]], Counter, float]:
    started = time.monotonic()
    deadline = started + seconds
    results = await asyncio.gather(*(
        _submitter(nodes[j % len(nodes)], users[j % len(users)], users, deadline, f"s{j}", random.Random(j))
        for j in range(concurrency)))
    return [a for a, _ in results], sum((r for _, r in results), Counter()), time.monotonic() - started


def stored_by_message_id(store, prefix: str) -> Counter:
    """(Message-ID, mailbox address, folder) -> copies stored, of the messages whose Message-ID
    starts with ``prefix``."""
    from sqlalchemy import func, select

    from ..store.models import Account, ContentSort, Folder, Message

    with store.reader() as s:
        rows = s.execute(select(ContentSort.message_id, Account.address, Folder.name, func.count(Message.id))
                         .join(Message, Message.content_id == ContentSort.content_id)
                         .join(Folder, Folder.id == Message.folder_id).join(Account, Account.id == Folder.account_id)
                         .where(ContentSort.message_id.like(f"%{prefix}.%"))
                         .group_by(ContentSort.message_id, Account.address, Folder.name)).all()
    return Counter({(mid.strip("<>"), address, folder): n for mid, address, folder, n in rows})


def smtp_stage(report: Report, nodes: list[Node], store, users: list[str], concurrency: int,
               seconds: float) -> tuple[int, str]:
    per_session, refused, elapsed = asyncio.run(_submit_all(nodes, users, concurrency, seconds))
    accepted = [a for session in per_session for a in session]
    per_node = Counter()
    for j, session in enumerate(per_session):
        per_node[nodes[j % len(nodes)].name] += len(session)
    stored = stored_by_message_id(store, SMTP_TAG)
    expected = {(mid, to, "INBOX") for mid, to in accepted}
    lost = expected - set(stored)
    twice = {k for k, n in stored.items() if n > 1}
    unexpected = set(stored) - expected
    split = ", ".join(f"node {name} {n:,}" for name, n in sorted(per_node.items()))
    report.figures.append(("SMTP submission", f"{len(accepted):,} messages of 4 KB over {concurrency} sessions in "
                                              f"{elapsed:.1f} s = {len(accepted) / elapsed:,.0f} messages/s ({split}); "
                                              f"{sum(refused.values())} refused" + (f" {dict(refused)}" if refused else "")))
    report.check("smtp: every 250 stored once in its recipient's INBOX",
                 accepted and not lost and not twice and not unexpected,
                 f"{len(accepted):,} accepted, {sum(stored.values()):,} stored; {len(lost)} lost, "
                 f"{len(twice)} stored twice, {len(unexpected)} stored without a 250")
    permanent = {code: n for code, n in refused.items() if code.startswith("5")}
    report.check("smtp: no message refused for good (5xx)", not permanent,
                 f"refused: {dict(refused)}" if refused else "none refused")
    return len(accepted), "message"


# -- 2. IDLE across nodes ------------------------------------------------------------------------------

async def _idle_session(node: Node, user: str) -> LineClient:
    c = await LineClient.connect(node.imap[1])
    for command in (f'LOGIN "{user}" "{PASSWORD}"', "SELECT INBOX"):
        answer = (await c.command(command))[-1]
        if b" OK" not in answer:
            raise RuntimeError(f"{command.split()[0]} as {user} on node {node.name}: {answer!r}")
    c.writer.write(b"i IDLE\r\n")
    line = await c.reader.readline()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE refused on node {node.name}: {line!r}")
    return c


def _seconds(result: float | tuple[bytes, float]) -> float:
    return result if isinstance(result, float) else result[1]


async def _probe_all(nodes: list[Node], users: list[str], seconds: float):
    """(latency from the end of DATA, latency from the 250, failures, IDLE sessions) of the probes."""
    n = len(nodes)
    sessions: list[LineClient] = []
    for start in range(0, len(users), 100):
        sessions += await asyncio.gather(*(_idle_session(nodes[k % n], users[k])
                                           for k in range(start, min(len(users), start + 100))))
    senders = [await SmtpClient.connect(node.smtp) for node in nodes]
    await asyncio.sleep(0.5)
    from_dot, from_250, failures = [], [], []
    deadline = time.monotonic() + seconds
    k = 0
    while time.monotonic() < deadline or k < MIN_PROBES:
        u = k % len(users)
        session, via = sessions[u], senders[(u + 1) % n]
        await via.begin("probe@elsewhere.example", users[u])
        raw = make_message(k, users[u], size=600, sender="probe@elsewhere.example",
                           message_id=f"{PROBE_TAG}.{k}@bench.example")
        started = time.perf_counter()
        via.writer.write(raw + b".\r\n")

        async def accepted() -> tuple[bytes, float]:
            answer = await via.reply()
            return answer, time.perf_counter() - started

        async def told() -> float:
            while True:
                line = await session.reader.readline()
                if not line:
                    raise ConnectionError("the IDLE session was closed")
                if line.endswith(b" EXISTS\r\n"):
                    return time.perf_counter() - started

        k += 1
        waiting = {"the 250": asyncio.ensure_future(accepted()), "the EXISTS": asyncio.ensure_future(told())}
        await asyncio.wait(waiting.values(), timeout=PROBE_TIMEOUT)
        late = {what: task for what, task in waiting.items() if not task.done()}
        if late:  # a failure; waited for longer, it tells a late notice (the 30 s poll) from a lost one
            await asyncio.wait(late.values(), timeout=LATE_TIMEOUT)
        broken = [f"{what}: {task.exception()!r}" for what, task in waiting.items()
                  if task.done() and task.exception() is not None]
        if late or broken:
            came = [f"{what} after {_seconds(task.result()):.1f} s" if task.done() and task.exception() is None
                    else f"no {what.split()[1]} in {PROBE_TIMEOUT + LATE_TIMEOUT:.0f} s" for what, task in late.items()]
            sent = waiting["the 250"]
            if sent.done() and sent.exception() is None and not sent.result()[0].startswith(b"250"):
                came.append(f"the sending node answered {sent.result()[0].decode(errors='replace').strip()!r}")
            for task in waiting.values():
                task.cancel()
            failures.append(f"probe {k} to {users[u]} (IDLE on node {nodes[u % n].name}, sent through node "
                            f"{nodes[(u + 1) % n].name}): {'; '.join(came + broken)}")
            break  # the sessions' state is unknown now
        answer, after_250 = waiting["the 250"].result()
        after_dot = waiting["the EXISTS"].result()
        if not answer.startswith(b"250"):
            failures.append(f"probe {k}: {answer!r}")
            continue
        from_dot.append(after_dot)
        from_250.append(after_dot - after_250)
    for c in senders:
        await c.close()
    for c in sessions:
        c.writer.close()
    return from_dot, from_250, failures, len(sessions)


def idle_stage(report: Report, nodes: list[Node], users: list[str], seconds: float) -> tuple[int, str]:
    from_dot, from_250, failures, sessions = asyncio.run(_probe_all(nodes, users, seconds))

    def ms(values: list[float]) -> str:
        if not values:
            return "no probes"
        return (f"median {statistics.median(values) * 1000:.1f} ms, p95 {_percentile(values, 95) * 1000:.1f} ms, "
                f"max {max(values) * 1000:.1f} ms")

    median = statistics.median(from_dot) * 1000 if from_dot else float("inf")
    across = "across nodes" if len(nodes) > 1 else "(one node)"
    report.figures.append((f"IDLE notice {across}",
                           f"{len(from_dot):,} probes, {sessions:,} sessions in IDLE; end of DATA -> EXISTS: "
                           f"{ms(from_dot)} (bar: median < {IDLE_BAR_MS:.0f} ms: "
                           f"{'met' if median < IDLE_BAR_MS else 'NOT MET'})"))
    report.figures.append(("", f"250 -> EXISTS: {ms(from_250)} (negative: the notice came before the 250)"))
    report.check("idle: every probe accepted and its IDLE session told", from_dot and not failures,
                 f"{len(from_dot):,} told" + (f"; {'; '.join(failures[:3])}" if failures else ""))
    return len(from_dot), "probe"


# -- 3. a drop through all the nodes -------------------------------------------------------------------

def _mail_drop(node: Node, data: bytes) -> None:
    """The agency mails the drop to drops@ through ``node``'s submission, as a clerk would."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = f"{AGENCY}@{DOMAIN}"
    msg["To"] = f"drops@{DOMAIN}"
    msg["Subject"] = f"{NOTICE_TYPE} (bench cluster)"
    msg.set_content("the drop is attached")
    msg.add_attachment(data, maintype="text", subtype="csv", filename="mailed.csv")
    with smtplib.SMTP(*node.submission, timeout=120) as smtp:
        smtp.login(AGENCY, AGENCY_PASSWORD)  # loopback, development: no TLS needed
        smtp.send_message(msg)


def _drop_state(store, agency_address: str) -> tuple[list, int]:
    """(id, source, filename, state, rows_total, rows_delivered, created_at, finished_at) of every
    drop, and the messages in the agency's INBOX."""
    from sqlalchemy import func, select

    from ..store.models import Account, Drop, Folder, Message

    with store.reader() as s:
        drops = s.execute(select(Drop.id, Drop.source, Drop.filename, Drop.state, Drop.rows_total,
                                 Drop.rows_delivered, Drop.created_at, Drop.finished_at).order_by(Drop.id)).all()
        summaries = s.scalar(select(func.count(Message.id)).join(Folder, Folder.id == Message.folder_id)
                             .join(Account, Account.id == Folder.account_id)
                             .where(Account.address == agency_address, Folder.name == "INBOX"))
    return drops, summaries or 0


def _who_ran(nodes: list[Node], source: str, filename: str, drop_id: int) -> str:
    """The node whose log says it ran the drop (spool.py and maildrop.py log one line for each)."""
    where = f"spool {AGENCY}/{NOTICE_TYPE}/{Path(filename).name}" if source == "spool" else f"mail {AGENCY}/{NOTICE_TYPE}/"
    names = [node.name for node in nodes if any(where in line and f": drop {drop_id}:" in line for line in node.log)]
    return "node " + "+".join(names) if names else "node ?"


def drop_stage(report: Report, city: City, nodes: list[Node], store, rows: int) -> tuple[int, str]:
    from sqlalchemy import func, select

    from delivery.service import POLL_SECONDS

    from ..store.models import Account, DropRow, Folder, Message, Notice

    folder = city.spool / AGENCY / NOTICE_TYPE
    folder.mkdir(parents=True, exist_ok=True)
    header, *lines = city.drop_csv.read_bytes().splitlines(keepends=True)
    files = {"forward.csv": header + b"".join(lines), "backward.csv": header + b"".join(reversed(lines))}
    mailed = header + b"".join(lines[len(lines) // 2:] + lines[:len(lines) // 2])
    agency_address = f"{AGENCY}@{DOMAIN}"
    started = time.monotonic()
    for name, data in files.items():  # as an agency's system writes: a temporary name, then a rename
        part = folder / f"{name}.part"
        part.write_bytes(data)
        part.rename(folder / name)
    try:
        _mail_drop(nodes[-1], mailed)
        expected = 3
    except (smtplib.SMTPException, OSError) as exc:
        report.check(f"drop: mailed through node {nodes[-1].name}", False, f"{exc.__class__.__name__}: {exc}")
        expected = 2
    deadline = started + 300 + rows / 20
    while True:
        drops, summaries = _drop_state(store, agency_address)
        finished = [d for d in drops if d.state in ("done", "failed")]
        if (len(finished) >= expected and summaries >= expected - 2
                and not any((folder / name).exists() for name in files)):
            break
        if time.monotonic() > deadline or any(node.proc.poll() is not None for node in nodes):
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    time.sleep(2 * POLL_SECONDS + 1)  # two more polls of every watcher: time for a second run to show
    drops, summaries = _drop_state(store, agency_address)
    with store.reader() as s:
        notices, citizens = s.execute(select(func.count(Notice.id), func.count(func.distinct(Notice.account_id)))
                                      .where(Notice.notice_type_id == NOTICE_TYPE)).one()
        per_inbox = Counter(n for _, n in s.execute(
            select(Folder.account_id, func.count(Message.id)).join(Message, Message.folder_id == Folder.id)
            .join(Account, Account.id == Folder.account_id)
            .where(Folder.name == "INBOX", Account.id.in_(select(Notice.account_id))).group_by(Folder.account_id)))
        statuses = dict(s.execute(select(DropRow.status, func.count(DropRow.id)).group_by(DropRow.status)).all())
        per_drop = Counter({(drop_id, status): n for drop_id, status, n in s.execute(
            select(DropRow.drop_id, DropRow.status, func.count(DropRow.id)).group_by(DropRow.drop_id, DropRow.status))})
    ran = [d for d in drops if d.created_at and d.finished_at]
    running = (max(d.finished_at for d in ran) - min(d.created_at for d in ran)).total_seconds() if ran else 0.0
    report.figures.append(("drop through the nodes",
                           f"{rows:,} rows in 3 overlapping drops (2 spooled, 1 mailed): {notices:,} notices in "
                           f"{elapsed:.1f} s = {notices / elapsed:,.0f} notices/s end to end (files and mail in "
                           f"to the last drop done, watchers polling every {POLL_SECONDS:.0f} s); "
                           f"{notices / running if running else 0:,.0f} notices/s while the drops ran "
                           f"({running:.1f} s)"))
    for d in drops:
        report.figures.append(("", f"drop {d.id} ({d.source} {Path(d.filename).name}, {_who_ran(nodes, d.source, d.filename, d.id)}): "
                                   f"{d.state}, {per_drop[(d.id, 'delivered')]:,} delivered, "
                                   f"{per_drop[(d.id, 'duplicate')]:,} already delivered by another"))
    report.check("drop: three drops, all done", [d.state for d in drops] == ["done"] * 3,
                 ", ".join(f"drop {d.id} {d.state}" for d in drops) or "no drop ran")
    report.check("drop: every row delivered exactly once",
                 notices == citizens == rows and per_inbox == Counter({1: rows})
                 and sum(d.rows_delivered for d in drops) == rows,
                 f"{notices:,} notices to {citizens:,} citizens of {rows:,}; INBOX sizes {dict(per_inbox)}; "
                 f"rows by status {statuses}")
    report.check("drop: no row other than delivered or a duplicate",
                 set(statuses) <= {"delivered", "duplicate"} and statuses.get("duplicate") == 2 * rows,
                 f"rows by status {statuses}")
    done = sorted(p.name for p in (folder / "done").glob("*.csv") if not p.name.endswith(("report.csv", "paper.csv")))
    failed = sorted(p.name for p in (folder / "failed").glob("*")) if (folder / "failed").exists() else []
    report.check("spool: both files moved to done/, none to failed/", done == sorted(files) and not failed,
                 f"done/ {done}, failed/ {failed}")
    report.check("agency: exactly one summary of the mailed drop", summaries == 1,
                 f"{summaries} message{'s' if summaries != 1 else ''} in {agency_address}'s INBOX")
    return notices, "notice"


# -- the command ------------------------------------------------------------------------------------

def run(root: Path, store_url: str, nodes: int, users: int, rows: int, seconds: float, concurrency: int,
        overrides: tuple[str, ...]) -> Report:
    from .. import config as config_mod
    from ..store import open_store

    city = prepare_city(root, store_url, nodes, users, rows)
    report = Report()
    load = os.getloadavg()
    try:
        running = start_nodes(city, overrides)
    except RuntimeError as exc:  # a node that did not start: its log's end says why
        raise click.ClickException(str(exc)) from None
    store = None
    codes: list[int | None] = []
    stages = (("smtp", "SMTP submission", lambda: smtp_stage(report, running, store, city.users, concurrency, seconds)),
              ("idle", "IDLE across nodes", lambda: idle_stage(report, running, city.users, seconds)),
              ("drop", "a drop through every node", lambda: drop_stage(report, city, running, store, rows)))
    try:
        store = open_store(config_mod.load(city.configs[0]))
        for n, (name, label, stage) in enumerate(stages, start=1):
            click.echo(f"stage {n}: {label} ...")
            cpu, heard = nodes_cpu(running), notifications_received(running)
            try:
                count, unit = stage()
                cpu = nodes_cpu(running) - cpu
                report.figures.append(("", f"CPU of the nodes (user + sys, with their workers; PostgreSQL's not "
                                           f"counted): {cpu:.1f} s = {1000 * cpu / max(count, 1):.2f} ms a {unit}"))
                report.figures.append(("", "change notifications received (LISTEN, only the channels of a node's "
                                           "sessions): " + _received_text(running, heard,
                                                                          notifications_received(running))))
            except Exception as exc:  # a failed check; the other stages still run and report
                report.check(f"{name}: the stage ran to its end", False, f"{exc.__class__.__name__}: {exc}")
    finally:
        codes = stop_nodes(running)
        if store is not None:
            store.dispose()
        for node in running:
            (root / f"node-{node.name}.log").write_text("".join(node.log), encoding="utf-8")
    tracebacks = [node.name for node in running if "Traceback" in "".join(node.log)]
    for node, code in zip(running, codes):
        if code != 0 or node.name in tracebacks:  # what went wrong there, before the table
            log = "".join(node.log)
            start = log.find("Traceback")
            lines = log[start:].splitlines()[:40] if start >= 0 else log.splitlines()[-40:]
            click.echo(f"node {node.name} (exit status {code}), its log {'from the first traceback' if start >= 0 else 'at the end'} "
                       f"(all of it: {root / f'node-{node.name}.log'}, kept with --dir):\n" + "\n".join(lines), err=True)
    report.check("nodes: each stopped cleanly, no traceback in any log", codes == [0] * nodes and not tracebacks,
                 f"exit statuses {codes}" + (f"; tracebacks in node {', '.join(tracebacks)}" if tracebacks else ""))
    report.figures.insert(0, ("load average", f"{load[0]:.2f} at the start of the stages, {os.getloadavg()[0]:.2f} "
                                              f"at the end ({os.cpu_count()} cores, shared with whatever else runs)"))
    return report


def print_report(report: Report, nodes: int) -> None:
    click.echo(f"bench cluster (PostgreSQL, {nodes} node{'s' if nodes != 1 else ''}):")
    width = max(len(label) for label, _ in report.figures)
    for label, text in report.figures:
        click.echo(f"  {label:<{width}}  {text}")
    click.echo("checks:")
    for c in report.checks:
        click.echo(f"  {'ok    ' if c.ok else 'FAILED'} {c.what}: {c.detail}")


@click.command("cluster")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 16), help="`civicmail serve` nodes")
@click.option("--store-url", default=DEFAULT_STORE, show_default=True, metavar="URL",
              help="a postgresql+psycopg:// URL naming a server and a database to connect to; the run creates a "
                   "throwaway database civicmail_bench_<random> on that server and drops it at the end")
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="length of the SMTP load, and of the IDLE probes")
@click.option("--rows", default=10_000, show_default=True, type=click.IntRange(1), help="rows of the drop")
@click.option("--users", default=300, show_default=True, type=click.IntRange(1),
              help="citizens with passwords: SMTP senders and recipients, one IDLE session each")
@click.option("--concurrency", default=20, show_default=True, type=click.IntRange(1),
              help="SMTP submission sessions, spread over the nodes")
@click.option("--set", "overrides", multiple=True, help="extra config override for every node (section.key=value)")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="work directory, kept with the nodes' logs (default: a temporary one, removed afterwards)")
def command(nodes: int, store_url: str, seconds: float, rows: int, users: int, concurrency: int,
            overrides: tuple[str, ...], work_dir: Path | None) -> None:
    """Start NODES `civicmail serve` nodes on one PostgreSQL; time SMTP, IDLE across nodes and a
    drop through all of them, and check that nothing was lost or delivered twice."""
    if not store_url:
        raise click.BadParameter("nodes share one PostgreSQL database: give a PostgreSQL URL", param_hint="--store-url")
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-cluster-") as tmp, throwaway_store(store_url) as url:
        root = work_dir or Path(tmp)
        if root.exists() and any(root.iterdir()):
            raise click.BadParameter(f"{root} is not empty", param_hint="--dir")
        report = run(root, url, nodes, users, rows, seconds, concurrency, overrides)
    print_report(report, nodes)
    failed = [c.what for c in report.checks if not c.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed: {'; '.join(failed)}")

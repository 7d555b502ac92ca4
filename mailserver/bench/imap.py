"""`civicmail bench imap`: the IMAP figures of issue 4, on loopback, in a throwaway data directory.

* select: SELECT + ``UID FETCH 1:* (FLAGS)`` of a folder of --messages messages (bar: < 1 s);
  then the same with ``SELECT INBOX (CONDSTORE)``, so that each FLAGS carries its MODSEQ;
* idle: the server's resident memory holding --idle connections in IDLE (bar: 10,000 under
  512 MB), and how long sessions in IDLE take to be told of a new message (bar: 1 s);
* stress: --clients aioimaplib clients loop LOGIN, LIST, STATUS, SELECT, FETCH, STORE,
  EXPUNGE, APPEND, SORT, THREAD, ESEARCH and LOGOUT at random, every answer checked against a
  model of the mailbox (each client owns one mailbox, so the model is exact); prints commands/s,
  state errors, the server's CPU and context switches per command (on PostgreSQL also its
  backends' CPU per command: bench/pgcpu.py) and its memory after each of --runs runs;
  --real-hash gives the users the product's argon2id; --keep-sessions: one session per client
  for the whole run, a fixed mix each cycle (issue 12), --sort-mix adding SORT,
  THREAD and ESEARCH to it.

The server runs in a child process (only the IMAP listeners and the folder watcher), so that
its memory is measured alone.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import click

from .pgcpu import BackendCpu
from .util import CLOCK_TICKS, cpu_ticks, store_url_option, throwaway_store

PASSWORD = "bench password 1"


# -- the data directory and the server child ---------------------------------------------------------

#: a cheap argon2id for the bench's users, unless --real-hash asks for the product's own settings
CHEAP_HASH = ("passwords.memory_cost_kib=1024", "passwords.time_cost=1")


def _config(root: Path, *overrides: str, real_hash: bool = False, store_url: str = ""):
    """The bench's config in ``root``; the first call writes it (its store at ``store_url``, the
    SQLite file in ``root`` if empty), later calls read it back."""
    from .. import config as config_mod
    from ..provision import write_config

    path = root / "civicmail.toml"
    if not path.exists():
        write_config(path, "bench.example.cn", "mail.bench.example.cn", store_url)
    return config_mod.load(path, (() if real_hash else CHEAP_HASH) + (
                                  "imap.max_connections_per_user_ip=100000",
                                  # the idle bench logs in 200 connections at once from one address
                                  "imap.max_preauth_connections_per_ip=100000") + overrides)


def varied_messages(n: int, seed: int = 5256) -> list[bytes]:
    """``n`` distinct messages as a busy mailbox holds them, for SORT and THREAD: Chinese and
    Latin subjects in some thousands of threads ("Re: " replies with References to an earlier
    message of theirs), senders with Chinese display names, Dates over a year (one in fifty
    has none)."""
    from email.header import Header

    from .util import citizen_name

    rng = random.Random(seed)
    senders = [(Header(citizen_name(rng), "utf-8").encode(), f"s{i}@gov{i % 40}.example") for i in range(500)]
    topics = max(1, n // 20)
    last: dict[int, int] = {}
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    out = []
    for i in range(n):
        topic = rng.randrange(topics)
        name, address = senders[rng.randrange(len(senders))]
        subject = f"关于第{topic}号事项的通知" if topic % 3 else f"Notice {topic} of the city"
        head = [f"From: {name} <{address}>", "To: u0@bench.example.cn", f"Message-ID: <m{i}@bench.example>"]
        if topic in last:
            subject = "Re: " + subject
            head.append(f"References: <m{last[topic]}@bench.example>")
        last[topic] = i
        head.append("Subject: " + Header(subject, "utf-8").encode())
        if i % 50:
            when = start + dt.timedelta(seconds=rng.randrange(365 * 86400))
            head.append("Date: " + when.strftime("%a, %d %b %Y %H:%M:%S +0000"))
        out.append(("\r\n".join(head) + "\r\n\r\n" + "body line\r\n" * 20).encode())
    return out


def prepare_data(root: Path, users: int, messages: int, varied: bool = False,
                 real_hash: bool = False) -> list[tuple[str, int]]:
    """A fresh data directory with ``users`` citizens; the first has ``messages`` in INBOX (all
    one message, or ``varied`` ones: ``varied_messages``). Their passwords are hashed with the
    product's argon2id settings with ``real_hash``, cheaply otherwise."""
    from sqlalchemy import select

    from ..provision import prepare
    from ..identity import idnumber
    from ..registry import Registry
    from ..registry.citizens import add_citizen
    from ..store import open_store
    from ..store.api import NewMessage
    from ..store.models import Account

    cfg = _config(root, real_hash=real_hash)
    prepare(cfg)
    store = open_store(cfg)
    registry = Registry(cfg, store)
    made = []
    for i in range(users):
        number = idnumber.make("330106", dt.date(1960, 1, 1) + dt.timedelta(days=i % 20000), i // 20000 + 1)
        made.append(add_citizen(registry, "张伟", number, address=f"u{i}@bench.example.cn", password=PASSWORD).address)
    with store.reader() as s:
        ids = dict(s.execute(select(Account.address, Account.id)).all())
    out = [(a, ids[a]) for a in made]
    raw = (b"From: traffic@bench.example.cn\r\nTo: u0@bench.example.cn\r\nSubject: notice\r\n"
           b"Message-ID: <bench@x>\r\n\r\n" + b"body line\r\n" * 40)
    done = 0
    while done < messages:
        n = min(10_000, messages - done)
        with store.session() as s:  # one content row per batch, shared by its messages (unless varied)
            raws = varied_messages(n, seed=done) if varied else [raw] * n
            store.mail.deliver_in(s, [NewMessage(out[0][1], r, flags=(i % 3 == 0)) for i, r in enumerate(raws)])
        done += n
    store.dispose()
    return out


def _child_main(root: str, conn, profile: str | None = None, real_hash: bool = False,
                settings: tuple[str, ...] = (), port: int = 0, profile_cpu: bool = False,
                handoff: tuple | None = None) -> None:
    """The server process: IMAP on 127.0.0.1:``port`` (0: any) plus the folder watcher, with the
    config ``settings`` (KEY=VALUE) on top; ``handoff`` as ``ServerContext.handoff`` (several
    processes: the first accepts and hands connections to the others, imap/handoff.py). With
    ``profile``, the event loop and every store thread run under cProfile; the merged stats go
    to that file, and those of the read and write lanes' threads to ``{profile}.read`` and
    ``{profile}.write``. ``profile_cpu``: each thread's CPU time is counted
    (``time.thread_time``), not the wall clock, in which a thread waiting for the database's
    answer looks as busy as one working."""
    import concurrent.futures
    import cProfile
    import pstats
    import resource
    import threading

    from ..registry import Registry
    from ..server import ServerContext, run_loop
    from ..store import open_store
    from ..imap.service import ImapService, WatcherService, listener_services

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cfg = _config(Path(root), *settings, real_hash=real_hash)
    store = open_store(cfg)
    profiles: list[cProfile.Profile] = []
    clock = (time.thread_time,) if profile_cpu else ()

    def profiled_thread() -> None:
        profiles.append(cProfile.Profile(*clock))
        profiles[-1].enable()

    extra = {}
    lanes: dict[str, list[cProfile.Profile]] = {}
    if profile:
        from .. import lanes as lane_module

        work = lane_module.BatchLane._work  # every lane thread's (SpillLane's too)

        def profiled_work(lane, index: int) -> None:  # the bench child's own process: no other server here
            name = threading.current_thread().name.split("-")[0]
            lanes.setdefault(name, []).append(cProfile.Profile(*clock))
            lanes[name][-1].enable()
            work(lane, index)

        lane_module.BatchLane._work = profiled_work
        extra["executor"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="store", initializer=profiled_thread)
        profiled_thread()
    ctx = ServerContext(cfg, store, Registry(cfg, store), handoff=handoff, **extra)

    async def main():
        services: list = [WatcherService(ctx), *listener_services(ctx, [(f"127.0.0.1:{port}", False, "imap")])]
        imap = next(service for service in services if isinstance(service, ImapService))
        for service in services:
            await service.start()
        conn.send(imap.address[1] if imap.address else port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
        for service in reversed(services):
            await service.stop()

    run_loop(cfg, main())  # the event loop serve runs (server.event_loop)
    if profile:
        ctx.shutdown()
        for p in profiles:
            p.create_stats()
        pstats.Stats(*profiles).dump_stats(profile)
        for name, stats in lanes.items():
            for p in stats:
                p.create_stats()
            pstats.Stats(*stats).dump_stats(f"{profile}.{name}")


class ServerChild:
    """The server in child processes: one, or with ``--set server.workers=N`` N, the first
    accepting and handing each connection in turn to itself or another (imap/handoff.py), as
    `serve` runs its IMAP workers; CPU and context switches are summed over them, the memory is
    the first one's."""

    def __init__(self, root: Path, profile: str | None = None, real_hash: bool = False,
                 settings: tuple[str, ...] = (), profile_cpu: bool = False) -> None:
        workers = _config(root, *settings).server.workers or len(os.sched_getaffinity(0))
        self.procs: list = []
        self.conns: list = []
        self.port = 0
        from ..imap.handoff import channel_pair

        pairs = [channel_pair() for _ in range(1, workers)]
        for n in range(workers):
            handoff = None if workers == 1 else ("accept", [a for a, _ in pairs]) if n == 0 else ("work", pairs[n - 1][1])
            self._start(root, profile, real_hash, settings, profile_cpu, handoff)
        for a, b in pairs:  # the children have their own copies
            a.close()
            b.close()

    def _start(self, root: Path, profile: str | None, real_hash: bool, settings: tuple[str, ...],
               profile_cpu: bool = False, handoff: tuple | None = None) -> None:
        mp = multiprocessing.get_context("spawn")
        conn, child = mp.Pipe()
        proc = mp.Process(target=_child_main, args=(str(root), child, profile and f"{profile}.{len(self.procs)}"
                                                     if self.procs else profile, real_hash, settings, self.port,
                                                     profile_cpu, handoff),
                          daemon=True)
        proc.start()
        while not conn.poll(0.2):  # a child that failed to start is an error, not a hang
            if not proc.is_alive():
                raise RuntimeError(f"the bench's server exited with code {proc.exitcode} before serving")
        self.port = conn.recv()
        self.procs.append(proc)
        self.conns.append(conn)

    @property
    def proc(self):
        return self.procs[0]

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server's processes so far: a cost that grows in
        the kernel (fsync, the file system) shows in the second alone."""
        each = self.cpu_each()
        return sum(u for u, _ in each), sum(s for _, s in each)

    def cpu_each(self) -> list[tuple[float, float]]:
        """(user, system) CPU seconds of each server process so far, the first first."""
        out = []
        for proc in self.procs:
            ticks = cpu_ticks(proc.pid)
            if ticks is None:
                raise ProcessLookupError(f"the bench's server process {proc.pid} is gone")
            out.append((ticks[0] / CLOCK_TICKS, ticks[1] / CLOCK_TICKS))
        return out

    def context_switches(self) -> int:
        """Context switches of all the server's threads so far (the kernel's count), a cost that
        each hand-off between the event loop and a store thread adds to."""
        total = 0
        for status in (s for proc in self.procs for s in Path(f"/proc/{proc.pid}/task").glob("*/status")):
            try:
                lines = status.read_text().splitlines()
            except OSError:  # the thread ended meanwhile
                continue
            total += sum(int(ln.split()[1]) for ln in lines if ln.split(":")[0].endswith("ctxt_switches"))
        return total

    def stop(self) -> None:
        """The first process first: it stops handing connections over before its workers go."""
        for conn, proc in zip(self.conns, self.procs):
            conn.send("stop")
            proc.join(30)


# -- a minimal line client (the hot loops need no library's overhead) ---------------------------------

class LineClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    @classmethod
    async def connect(cls, port: int) -> "LineClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        c = cls(reader, writer)
        await reader.readline()
        return c

    async def command(self, text: str) -> list[bytes]:
        self.n += 1
        tag = f"b{self.n}".encode()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


async def _time_select_fetch(port: int, user: str, condstore: bool = False) -> tuple[float, float, int]:
    c = await LineClient.connect(port)
    await c.command(f'LOGIN "{user}" "{PASSWORD}"')
    started = time.perf_counter()
    await c.command("SELECT INBOX (CONDSTORE)" if condstore else "SELECT INBOX")
    selected = time.perf_counter()
    lines = await c.command("UID FETCH 1:* (FLAGS)")
    done = time.perf_counter()
    c.writer.close()
    return selected - started, done - started, len(lines) - 1


SORT_COMMANDS = ("UID SORT (REVERSE DATE) UTF-8 ALL", "UID THREAD REFERENCES UTF-8 ALL")


async def _time_sort(port: int, user: str) -> list[tuple[str, float, int]]:
    """(command, seconds to its tagged OK, bytes answered) of each of SORT_COMMANDS, after a
    SELECT of the folder."""
    c = await LineClient.connect(port)
    await c.command(f'LOGIN "{user}" "{PASSWORD}"')
    await c.command("SELECT INBOX")
    out = []
    for text in SORT_COMMANDS:
        started = time.perf_counter()
        lines = await c.command(text)
        elapsed = time.perf_counter() - started
        if not lines[-1].split()[1:2] == [b"OK"]:
            raise RuntimeError(f"{text}: {lines[-1]!r}")
        out.append((text, elapsed, sum(len(ln) for ln in lines)))
    c.writer.close()
    return out


# -- IDLE ---------------------------------------------------------------------------------------------

#: --notify: what each IDLE session asks to be told of instead of selecting INBOX (RFC 5465)
NOTIFY_SET = "NOTIFY SET (PERSONAL (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))"


async def _idle_session(port: int, user: str, notify: bool = False) -> LineClient:
    c = await LineClient.connect(port)
    await c.command(f'LOGIN "{user}" "{PASSWORD}"')
    await c.command(NOTIFY_SET if notify else "SELECT INBOX")
    c.writer.write(b"i IDLE\r\n")
    line = await c.reader.readline()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE refused: {line!r}")
    return c


async def _idle_bench(root: Path, server: ServerChild, users: list[tuple[str, int]], count: int,
                      probes: int, notify: bool = False) -> tuple[float, list[float]]:
    from ..store import open_store

    sessions: list[tuple[LineClient, int]] = []
    for start in range(0, count, 200):
        batch = [(i, users[i % len(users)]) for i in range(start, min(count, start + 200))]
        made = await asyncio.gather(*(_idle_session(server.port, u[0], notify) for _, u in batch))
        sessions.extend((c, u[1]) for c, (_, u) in zip(made, batch))
    await asyncio.sleep(1.0)
    rss = server.rss_mib()
    # Latency: deliver (from this process: the cross-process path) to one user at a time and time
    # until every session of that user has read its EXISTS (with --notify: the STATUS of INBOX,
    # which those sessions have not selected).
    told_by = b"* STATUS " if notify else b"EXISTS\r\n"
    store = open_store(_config(root))
    loop = asyncio.get_running_loop()
    latencies = []
    for k in range(probes):
        account = users[(k * 7) % len(users)][1]
        watchers = [c for c, a in sessions if a == account]
        started = time.perf_counter()
        await loop.run_in_executor(None, store.mail.deliver, b"Subject: ping\r\n\r\nping\r\n", [account])

        async def told(c: LineClient) -> float:
            while True:
                line = await c.reader.readline()
                if told_by in line:
                    return time.perf_counter() - started
        latencies.extend(await asyncio.wait_for(asyncio.gather(*(told(c) for c in watchers)), 30))
    store.dispose()
    for c, _ in sessions:
        c.writer.close()
    return rss, latencies


# -- stress with a model checker ------------------------------------------------------------------------

class Model:
    """What one mailbox must contain: uid -> flags (a set of names), and UIDNEXT."""

    def __init__(self) -> None:
        self.messages: dict[int, set[str]] = {}
        self.uidnext = 1

    def expunge(self, lines) -> str | None:
        """Drop the messages marked \\Deleted; what is wrong with the EXPUNGE answer ``lines``, if anything."""
        gone = [u for u, f in self.messages.items() if "\\Deleted" in f]
        told = sum(1 for ln in lines if ln.endswith(b"EXPUNGE"))
        for u in gone:
            del self.messages[u]
        return None if told == len(gone) else f"EXPUNGE told {told}, model {len(gone)}"


_FETCH = re.compile(rb"^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)")


def _uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


async def _sort_thread_esearch(c, op: str, model: Model) -> str | None:
    """One of UID SORT (ARRIVAL), UID THREAD REFERENCES (both over ALL) or an ESEARCH (RFC 4731)
    UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED, checked against the model; what is wrong, if
    anything. Every message of the stress is "Subject: stress", appended one after another: by
    arrival they are in UID order, and one thread (under a dummy once there are two) holds them all."""
    import aioimaplib

    args = {"SORT": ("(ARRIVAL)", "UTF-8", "ALL"), "THREAD": ("REFERENCES", "UTF-8", "ALL"),
            "ESEARCH": ("RETURN", "(MIN MAX COUNT ALL)", "FLAGGED")}[op]
    # (ESEARCH: aioimaplib keeps the untagged answer named as the command unless told otherwise)
    resp = await c.protocol.execute(aioimaplib.Command("SEARCH" if op == "ESEARCH" else op, c.protocol.new_tag(), *args,
                                                       prefix="UID", untagged_resp_name=op, loop=c.protocol.loop))
    answer = b" ".join(resp.lines[:-1])  # aioimaplib: the untagged data without its name
    if op == "ESEARCH":
        want = sorted(u for u, f in model.messages.items() if "\\Flagged" in f)
        found = dict(re.findall(r"\b(MIN|MAX|COUNT|ALL) ([\d:,]+)", answer.decode()))
        got = {"COUNT": int(found.get("COUNT", -1)), "ALL": _uid_set(found["ALL"]) if "ALL" in found else [],
               "MIN": int(found["MIN"]) if "MIN" in found else None, "MAX": int(found["MAX"]) if "MAX" in found else None}
        expected = {"COUNT": len(want), "ALL": want, "MIN": want[0] if want else None,
                    "MAX": want[-1] if want else None}
        return None if got == expected else f"ESEARCH {answer!r}, model {want}"
    got = [int(n) for n in re.findall(rb"\d+", answer)]
    want = sorted(model.messages)
    return None if (got if op == "SORT" else sorted(got)) == want else f"{op} {answer!r}, model {want}"


async def _stress_client(host: str, port: int, user: str, model: Model, deadline: float, rng: random.Random,
                         counts: dict[str, int]) -> None:
    import aioimaplib

    def error(what: str) -> None:
        counts["errors"] += 1
        if counts["errors"] <= 5:
            click.echo(f"  state error ({user}): {what}", err=True)

    while time.monotonic() < deadline:
        c = aioimaplib.IMAP4(host, port, timeout=30)
        await c.wait_hello_from_server()
        await c.login(user, PASSWORD)
        counts["commands"] += 1
        counts["logins"] += 1
        resp = await c.select("INBOX")
        counts["commands"] += 1
        exists = next((int(ln.split()[0]) for ln in resp.lines if ln.endswith(b"EXISTS")), -1)
        if exists != len(model.messages):
            error(f"SELECT EXISTS {exists}, model {len(model.messages)}")
        for _ in range(rng.randint(3, 10)):
            op = rng.choice(("LIST", "STATUS", "FETCH", "STORE", "EXPUNGE", "APPEND", "APPEND", "NOOP", "SORT",
                             "THREAD", "ESEARCH"))
            counts["commands"] += 1
            if op == "LIST":
                resp = await c.list('""', "*")
                if sum(1 for ln in resp.lines if ln.startswith(b"(")) != 6:
                    error("LIST count")
            elif op == "NOOP":
                await c.noop()
            elif op in ("SORT", "THREAD", "ESEARCH"):
                if wrong := await _sort_thread_esearch(c, op, model):
                    error(wrong)
            elif op == "STATUS":
                resp = await c.status("INBOX", "(MESSAGES UIDNEXT)")
                want = f"MESSAGES {len(model.messages)} UIDNEXT {model.uidnext}".encode()
                if want not in resp.lines[0]:
                    error(f"STATUS {resp.lines[0]!r}, model {want!r}")
            elif op == "APPEND":
                if len(model.messages) > 40:
                    continue
                resp = await c.append(b"Subject: stress\r\n\r\nbody\r\n", mailbox="INBOX")
                m = re.search(rb"APPENDUID \d+ (\d+)", b" ".join(resp.lines))
                if not m or int(m.group(1)) != model.uidnext:
                    error(f"APPENDUID {resp.lines!r}, model {model.uidnext}")
                    continue
                model.messages[model.uidnext] = set()
                model.uidnext += 1
            elif op == "STORE":
                if not model.messages:
                    continue
                uid = rng.choice(list(model.messages))
                flag = rng.choice(("\\Seen", "\\Flagged", "\\Deleted", "\\Answered"))
                sign = rng.choice("+-")
                resp = await c.uid("store", str(uid), f"{sign}FLAGS", f"({flag})")
                before = set(model.messages[uid])
                (model.messages[uid].add if sign == "+" else model.messages[uid].discard)(flag)
                got = [_FETCH.match(b"* " + ln) for ln in resp.lines]
                got = [g for g in got if g and int(g.group(2)) == uid]
                # A server may leave out the FETCH when the flags did not change (Dovecot does).
                if not got and before == model.messages[uid]:
                    continue
                if not got or set(got[-1].group(3).decode().split()) - {"\\Recent"} != model.messages[uid]:
                    error(f"STORE {uid} {resp.lines!r}, model {model.messages[uid]}")
            elif op == "FETCH":
                resp = await c.uid("fetch", "1:*", "(FLAGS)")
                seen = {}
                for ln in resp.lines:
                    g = _FETCH.match(b"* " + ln)
                    if g:
                        seen[int(g.group(2))] = set(g.group(3).decode().split()) - {"\\Recent"}
                if seen != model.messages:
                    error(f"FETCH {seen}, model {model.messages}")
            elif op == "EXPUNGE":
                if wrong := model.expunge((await c.expunge()).lines):
                    error(wrong)
        await c.logout()
        counts["commands"] += 1


#: the whole message each kept session appends once a cycle: 4 KB, as issue 12's mix
KEPT_MESSAGE = (b"From: traffic@bench.example.cn\r\nTo: citizen@bench.example.cn\r\nSubject: stress\r\n\r\n"
                + b"a line of a notice, 64 bytes long, to make the message 4 KB....\r\n" * 62)


async def _kept_session_client(host: str, port: int, user: str, model: Model, deadline: float,
                               rng: random.Random, counts: dict[str, int], sort_mix: bool = False) -> None:
    """One session kept open for the whole run, each cycle the mix of issue 12 section 4: LIST,
    STATUS, SELECT, FETCH of flags, FETCH of a whole message, STORE of flags and keywords, STORE
    +FLAGS \\Deleted, EXPUNGE, APPEND of a 4 KB message; with ``sort_mix`` also UID SORT, UID
    THREAD and an ESEARCH after the STOREs. Every answer checked against the model."""
    import aioimaplib

    def error(what: str) -> None:
        counts["errors"] += 1
        if counts["errors"] <= 5:
            click.echo(f"  state error ({user}): {what}", err=True)

    def fetched(lines) -> dict[int, set[str]]:
        out = {}
        for ln in lines:
            g = _FETCH.match(b"* " + ln) if isinstance(ln, bytes) else None
            if g:
                out[int(g.group(2))] = set(g.group(3).decode().split()) - {"\\Recent"}
        return out

    c = aioimaplib.IMAP4(host, port, timeout=30)
    await c.wait_hello_from_server()
    await c.login(user, PASSWORD)
    counts["commands"] += 1
    counts["logins"] += 1
    while time.monotonic() < deadline:
        resp = await c.list('""', "*")
        if sum(1 for ln in resp.lines if ln.startswith(b"(")) != 6:
            error("LIST count")
        resp = await c.status("INBOX", "(MESSAGES UIDNEXT)")
        want = f"MESSAGES {len(model.messages)} UIDNEXT {model.uidnext}".encode()
        if want not in resp.lines[0]:
            error(f"STATUS {resp.lines[0]!r}, model {want!r}")
        resp = await c.select("INBOX")
        exists = next((int(ln.split()[0]) for ln in resp.lines if ln.endswith(b"EXISTS")), -1)
        if exists != len(model.messages):
            error(f"SELECT EXISTS {exists}, model {len(model.messages)}")
        resp = await c.uid("fetch", "1:*", "(FLAGS)")
        if fetched(resp.lines) != model.messages:
            error(f"FETCH {fetched(resp.lines)}, model {model.messages}")
        counts["commands"] += 4
        if model.messages:
            uid = rng.choice(list(model.messages))
            resp = await c.uid("fetch", str(uid), "(BODY.PEEK[])")
            if not any(bytes(ln) == KEPT_MESSAGE for ln in resp.lines):
                error(f"FETCH BODY.PEEK[] of {uid}: not the message appended")
            flags = rng.sample(("\\Seen", "\\Flagged", "\\Answered", "$Label1", "$Label2"), 2)
            resp = await c.uid("store", str(uid), "+FLAGS", f"({' '.join(flags)})")
            before = set(model.messages[uid])
            model.messages[uid].update(flags)
            got = fetched(resp.lines).get(uid)
            # A server may leave out the FETCH when the flags did not change (Dovecot does).
            if got != model.messages[uid] and not (got is None and before == model.messages[uid]):
                error(f"STORE {uid} {resp.lines!r}, model {model.messages[uid]}")
            gone = rng.choice(list(model.messages))
            await c.uid("store", str(gone), "+FLAGS.SILENT", "(\\Deleted)")
            model.messages[gone].add("\\Deleted")
            counts["commands"] += 3
        if sort_mix:
            for op in ("SORT", "THREAD", "ESEARCH"):
                if wrong := await _sort_thread_esearch(c, op, model):
                    error(wrong)
            counts["commands"] += 3
        if len(model.messages) > 4:  # expunge what is marked once the mailbox has a few messages
            if wrong := model.expunge((await c.expunge()).lines):
                error(wrong)
            counts["commands"] += 1
        resp = await c.append(KEPT_MESSAGE, mailbox="INBOX")
        m = re.search(rb"APPENDUID \d+ (\d+)", b" ".join(resp.lines))
        if not m or int(m.group(1)) != model.uidnext:
            error(f"APPENDUID {resp.lines!r}, model {model.uidnext}")
        else:
            model.messages[model.uidnext] = set()
            model.uidnext += 1
        counts["commands"] += 1
    await c.logout()
    counts["commands"] += 1


async def _stress(host: str, port: int, users: list[str], clients: int,
                  seconds: float, keep_sessions: bool = False, sort_mix: bool = False) -> tuple[int, int, float, int]:
    counts = {"commands": 0, "errors": 0, "logins": 0}
    deadline = time.monotonic() + seconds
    started = time.perf_counter()

    async def bounded(i: int) -> None:
        # A client that stops getting answers is a failure to report, not a reason to hang.
        try:
            if keep_sessions:
                run = _kept_session_client(host, port, users[i], Model(), deadline, random.Random(i), counts, sort_mix)
            else:
                run = _stress_client(host, port, users[i], Model(), deadline, random.Random(i), counts)
            await asyncio.wait_for(run, seconds + 120)
        except (asyncio.TimeoutError, OSError) as exc:
            counts["errors"] += 1
            click.echo(f"  stress client {i} failed: {exc!r}", err=True)

    await asyncio.gather(*(bounded(i) for i in range(clients)))
    return counts["commands"], counts["errors"], time.perf_counter() - started, counts["logins"]


# -- the command ---------------------------------------------------------------------------------------

@click.command("imap")
@click.option("--mode", type=click.Choice(["all", "select", "sort", "idle", "stress"]), default="all",
              show_default=True)
@click.option("--messages", default=100_000, show_default=True,
              help="messages in the folder SELECT opens and SORT sorts")
@click.option("--idle", "idle_count", default=10_000, show_default=True, help="connections held in IDLE")
@click.option("--idle-users", default=500, show_default=True, help="users those connections log in as")
@click.option("--notify", is_flag=True,
              help="the IDLE sessions select nothing and ask with NOTIFY SET (PERSONAL ...) instead; the "
                   "notice timed is the STATUS of INBOX")
@click.option("--clients", default=10, show_default=True, help="stress clients")
@click.option("--seconds", default=30.0, show_default=True, help="stress duration")
@click.option("--connect", metavar="HOST:PORT",
              help="stress another IMAP server instead (to compare on the same machine): it must "
                   f"accept LOGIN over plain text for u1..uN@bench.example.cn with the password {PASSWORD!r}, "
                   "their INBOXes empty and five more folders each (as bin/bench-dovecot sets up)")
@click.option("--real-hash", is_flag=True,
              help="give the bench's users the product's argon2id settings (passwords.*), not a cheap "
                   "one: every login that misses the login cache costs what it costs in production")
@click.option("--keep-sessions", is_flag=True,
              help="stress with sessions kept open (one LOGIN per client), each cycle LIST, STATUS, SELECT, "
                   "FETCH of flags and of a whole message, STORE of flags and keywords, STORE +FLAGS \\Deleted, "
                   "EXPUNGE and APPEND of a 4 KB message (issue 12's mix)")
@click.option("--sort-mix", is_flag=True,
              help="with --keep-sessions: each cycle also UID SORT (ARRIVAL), UID THREAD REFERENCES and an ESEARCH "
                   "(the random mix has them always)")
@click.option("--runs", default=1, show_default=True,
              help="stress runs against the one server, each with fresh users (the server's memory is "
                   "printed after each)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="a config setting for the server, e.g. login.cache_size=0 (repeatable)")
@click.option("--profile", type=click.Path(dir_okay=False), hidden=True,
              help="run the server under cProfile and write its stats to this file")
@click.option("--profile-cpu", is_flag=True, hidden=True,
              help="with --profile: count each thread's CPU time, not the wall clock")
@store_url_option
def command(mode: str, messages: int, idle_count: int, idle_users: int, notify: bool, clients: int, seconds: float,
            connect: str | None, real_hash: bool, keep_sessions: bool, sort_mix: bool, runs: int,
            settings: tuple[str, ...], profile: str | None, profile_cpu: bool, store_url: str) -> None:
    """SELECT/FETCH time, SORT and THREAD time, IDLE memory and notification latency, random stress
    with a model check."""
    if connect:
        if mode != "stress":
            raise click.UsageError("--connect goes with --mode stress")
        if store_url:
            raise click.UsageError("--connect drives another server: --store-url does not go with it")
        host, _, port = connect.rpartition(":")
        if not host or not port.isdigit():
            raise click.UsageError("--connect wants HOST:PORT")
        users = [f"u{i + 1}@bench.example.cn" for i in range(clients)]
        commands, errors, elapsed, logins = asyncio.run(_stress(host, int(port), users, clients, seconds, keep_sessions,
                                                                sort_mix))
        click.echo(f"stress against {connect}: {clients} clients, {commands:,} commands in {elapsed:.1f} s = "
                   f"{commands / elapsed:,.0f} commands/s, {logins:,} LOGINs, {errors} state errors")
        return
    with throwaway_store(store_url) as url, tempfile.TemporaryDirectory(prefix="civicmail-bench-imap-") as tmp:
        root = Path(tmp)
        engine = "PostgreSQL" if url else "SQLite"
        # Separate users per phase: [0] owns the big folder, then the IDLE users, then one per
        # stress client (its model starts from an empty mailbox).
        idle_n = idle_users if mode in ("all", "idle") else 0
        stress_n = clients * runs if mode in ("all", "stress") else 0
        users_needed = 1 + idle_n + stress_n
        started = time.monotonic()
        from ..errors import ConfigError

        try:
            _config(root, *settings, store_url=url)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from None
        folder = messages if mode in ("all", "select", "sort") else 0
        users = prepare_data(root, users_needed, folder, varied=mode in ("all", "sort"), real_hash=real_hash)
        click.echo(f"prepared {len(users)} users and {folder:,} messages on {engine} in {time.monotonic() - started:.1f} s")
        server = ServerChild(root, profile, real_hash, settings, profile_cpu)
        try:
            if mode in ("all", "select"):
                for condstore in (False, True):
                    label = "SELECT (CONDSTORE)" if condstore else "SELECT"
                    for attempt in range(3):
                        sel, total, lines = asyncio.run(_time_select_fetch(server.port, users[0][0], condstore))
                        click.echo(f"select: {label} {sel * 1000:.0f} ms, {label} + UID FETCH 1:* (FLAGS) of "
                                   f"{lines:,} messages {total * 1000:.0f} ms (run {attempt + 1})")
            if mode in ("all", "sort"):
                for attempt in range(3):
                    for text, elapsed, size in asyncio.run(_time_sort(server.port, users[0][0])):
                        click.echo(f"sort: {text} of {folder:,} messages {elapsed * 1000:.0f} ms "
                                   f"({size / 1024:,.0f} KiB answered, run {attempt + 1})")
            if mode in ("all", "idle"):
                base = server.rss_mib()
                rss, lat = asyncio.run(_idle_bench(root, server, users[1:1 + idle_n], idle_count, 20, notify))
                lat.sort()
                label = "idle (NOTIFY)" if notify else "idle"
                click.echo(f"{label}: {idle_count:,} connections in IDLE: server RSS {rss:.0f} MiB "
                           f"(before: {base:.0f} MiB, {(rss - base) * 1024 / max(idle_count, 1):.1f} KiB each); "
                           f"new-mail notice median {statistics.median(lat) * 1000:.0f} ms, "
                           f"max {lat[-1] * 1000:.0f} ms over {len(lat)} sessions")
            if mode in ("all", "stress"):
                import resource

                hashing = "the product's argon2id" if real_hash else "a cheap argon2id (--real-hash for the product's)"
                click.echo(f"stress: passwords hashed with {hashing}; server RSS {server.rss_mib():.0f} MiB")
                for run in range(runs):
                    user, system = server.cpu_times()
                    each = server.cpu_each()
                    switches = server.context_switches()
                    mine = resource.getrusage(resource.RUSAGE_SELF)
                    first = 1 + idle_n + run * clients
                    backends = BackendCpu(url).start() if url else None
                    commands, errors, elapsed, logins = asyncio.run(_stress(
                        "127.0.0.1", server.port, [u for u, _ in users[first:first + clients]], clients, seconds,
                        keep_sessions, sort_mix))
                    if backends:
                        backends.stop()
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    client_cpu = after.ru_utime + after.ru_stime - mine.ru_utime - mine.ru_stime
                    user_after, system_after = server.cpu_times()
                    split = ""
                    if len(each) > 1:  # several server processes: each one's share, the first first
                        split = " (" + " + ".join(f"{u + s - u0 - s0:.1f}" for (u, s), (u0, s0)
                                                 in zip(server.cpu_each(), each)) + " s per process)"
                    user, system = user_after - user, system_after - system
                    click.echo(f"stress{' (kept sessions)' if keep_sessions else ''}: {clients} clients, {commands:,} commands in {elapsed:.1f} s = "
                               f"{commands / elapsed:,.0f} commands/s, {logins:,} LOGINs, {errors} state errors "
                               f"(CPU: server {user + system:.1f} s{split}, "
                               f"{(user + system) * 1000 / max(commands, 1):.2f} ms per command "
                               f"({user * 1000 / max(commands, 1):.2f} user, {system * 1000 / max(commands, 1):.2f} system), "
                               f"{(server.context_switches() - switches) / max(commands, 1):.1f} context switches "
                               f"per command; clients {client_cpu:.1f} s; "
                               f"server RSS {server.rss_mib():.0f} MiB after run {run + 1})")
                    if backends:
                        click.echo(f"stress: PostgreSQL backends' CPU {backends.seconds:.1f} s = "
                                   f"{backends.seconds * 1000 / max(commands, 1):.2f} ms per command "
                                   f"({backends.backends} backends of the bench's database, utime + stime from "
                                   "/proc/PID/stat over the run; the server must be on this machine)")
        finally:
            server.stop()

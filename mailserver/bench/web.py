"""`civicmail bench web`: what the citizen portal costs the server (issue 15, "Done means").

Makes the demo city (`civicmail init --demo`, passwords hashed with the fast KDF settings the
other login benchmarks use: argon2id with 1 MiB and one pass, so a sign-in measures the web
face, not argon2), gives one demo citizen NOTICES more notices through the real pipeline (a
drop of NOTICES licence-renewal rows for them, run by `civicmail drop run`), starts `civicmail
serve` (its own process, as in production) and times, with aiohttp clients over loopback:

- **sign-ins**: the whole portal sign-in of a fresh browser: GET /signin (302 to the
  provider's authorize endpoint), GET /oidc/authorize (the provider's form), POST the address
  and password with the form's CSRF token, GET the portal's callback (code redeemed, ID token
  verified, the portal's cookie set);
- **"my notices" page views**: GET /notices, signed in, by CONCURRENCY clients at once (each its
  own cookie jar), every answer checked to be the page of notices.

Beside each figure: the server's CPU (user + sys of `serve` and its workers, from /proc) per
request. With ``--workers N`` the server runs N processes (``server.workers``), each serving the
citizens' HTTP on one port (SO_REUSEPORT). The machine
may be shared: the figures are lower bounds; the load average is printed with them.
"""
from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from .smtp import start_server
from .util import CLOCK_TICKS, cpu_ticks, store_url_option, throwaway_store

CITIZEN_NAME = "陈建国"
CITIZEN_NUMBER = "330102196804120318"
FAST_KDF = ("passwords.memory_cost_kib=1024", "passwords.time_cost=1")
_HTTP = re.compile(r"citizen services HTTP listening on ([\d.]+):(\d+)")
_LOGIN = re.compile(r"^ +(\S+) +(\S+@\S+) +(demo-\S+)$", re.M)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_NOTICE_LINK = re.compile(r'href="/notices/[A-Za-z0-9_-]{22}"')


def demo_city(data: Path, store_url: str = "") -> tuple[Path, dict[str, tuple[str, str]]]:
    """`civicmail init --demo` into DATA with the fast KDF settings (its store at ``store_url``,
    the SQLite file in DATA if empty); its config file and the demo logins it printed:
    {name: (address, password)}."""
    cli = [sys.executable, "-m", "mailserver.cli"]
    fast = [arg for o in FAST_KDF + ((f"store.url={store_url}",) if store_url else ()) for arg in ("--set", o)]
    done = subprocess.run(cli + fast + ["init", str(data), "--demo"], check=True, capture_output=True, text=True)
    return data / "civicmail.toml", {name: (a, pw) for name, a, pw in _LOGIN.findall(done.stdout)}


def prepare(root: Path, notices: int, store_url: str = "") -> tuple[Path, str, str]:
    """``root/data``: the demo city and NOTICES notices for one citizen; (config, address, password)."""
    cli = [sys.executable, "-m", "mailserver.cli"]
    config, logins = demo_city(root / "data", store_url)
    address, password = logins[CITIZEN_NAME]
    drop = root / "notices.csv"
    with open(drop, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "id_number", "name", "licence_number", "expiry_date", "office"])
        for n in range(notices):
            w.writerow([f"JJ-LR-BENCH-{n:06d}", CITIZEN_NUMBER, CITIZEN_NAME, f"3301{n:014d}", "2027-01-15",
                        "示例市车辆管理所滨江分所（江南大道100号）"])
    subprocess.run(cli + ["-c", str(config), "drop", "run", str(drop), "--agency", "traffic-police",
                          "--notice-type", "licence-renewal"], check=True, stdout=subprocess.DEVNULL)
    return config, address, password


def server_cpu(pid: int) -> float:
    """User + system CPU seconds so far of a process (all its threads) and its live children
    (the `serve` workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        ticks = cpu_ticks(p)
        if ticks is None:
            continue
        total += (ticks[0] + ticks[1]) / CLOCK_TICKS
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def free_port() -> int:
    """A loopback port free now (the workers must share one port: port 0 would give each its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sign_in(base: str, address: str, password: str):
    """A fresh browser signed into the portal; its aiohttp session (the caller closes it)."""
    import html

    import aiohttp

    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.get(base + "/signin?next=/notices", allow_redirects=False) as r:
            authorize = r.headers["Location"]
        async with http.get(base + authorize) as r:
            page = await r.text()
        fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(page)}
        async with http.post(base + "/oidc/signin", data={**fields, "address": address, "password": password},
                             allow_redirects=False) as r:
            callback = r.headers.get("Location", "")
        if "code=" not in callback:
            raise RuntimeError(f"the provider did not sign in: {r.status}")
        async with http.get(callback if callback.startswith("http") else base + callback,
                            allow_redirects=False) as r:
            if r.status != 302 or r.headers.get("Location") != "/notices":
                raise RuntimeError(f"the portal's callback failed: {r.status}")
    except BaseException:
        await http.close()
        raise
    return http


async def _sign_ins(base: str, address: str, password: str, count: int, concurrency: int) -> float:
    async def one_worker(n: int) -> None:
        for _ in range(n):
            http = await sign_in(base, address, password)
            await http.close()

    per = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    started = time.monotonic()
    await asyncio.gather(*(one_worker(n) for n in per))
    return time.monotonic() - started


async def _page_views(base: str, address: str, password: str, count: int, concurrency: int) -> float:
    clients = [await sign_in(base, address, password) for _ in range(concurrency)]
    try:
        async def view(http) -> None:
            async with http.get(base + "/notices", allow_redirects=False) as r:
                text = await r.text()
            if r.status != 200 or len(_NOTICE_LINK.findall(text)) < 20:
                raise RuntimeError(f"GET /notices answered {r.status} without a page of notices")

        for http in clients:  # warm: templates compiled, connections open
            await view(http)
        per = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]

        async def one_worker(http, n: int) -> None:
            for _ in range(n):
                await view(http)

        started = time.monotonic()
        await asyncio.gather(*(one_worker(h, n) for h, n in zip(clients, per)))
        return time.monotonic() - started
    finally:
        for http in clients:
            await http.close()


def run(root: Path, notices: int, sign_ins: int, views: int, concurrency: int,
        extra: tuple[str, ...] = (), profile: Path | None = None, workers: int = 1, store_url: str = "") -> list[str]:
    config, address, password = prepare(root, notices, store_url)
    if workers != 1:
        extra = (f"server.workers={workers}", f"http.listen=127.0.0.1:{free_port()}",
                 f"imap.listen=127.0.0.1:{free_port()}", f"imaps.listen=127.0.0.1:{free_port()}") + extra
    # one citizen signs in again and again: lift the per-account cap on live sessions (the oldest
    # would otherwise end while a concurrent sign-in of the same citizen is between its steps)
    proc, _, _, log = start_server(config, ("login.max_failures_per_ip=100000",
                                            f"oidc.max_sessions_per_account={sign_ins + 2 * concurrency}") + extra,
                                   profile)
    try:
        host, port = _HTTP.search("".join(log)).groups()  # type: ignore[union-attr]
        if workers != 1:  # every worker listening
            deadline = time.monotonic() + 120
            while len(_HTTP.findall("".join(log))) < (workers or os.cpu_count() or 1) and time.monotonic() < deadline:
                time.sleep(0.2)
        base = f"http://{host}:{port}"
        cpu = server_cpu(proc.pid)
        sign_in_seconds = asyncio.run(_sign_ins(base, address, password, sign_ins, concurrency))
        sign_in_cpu, cpu = server_cpu(proc.pid) - cpu, server_cpu(proc.pid)
        client_cpu = time.process_time()
        view_seconds = asyncio.run(_page_views(base, address, password, views, concurrency))
        client_cpu = time.process_time() - client_cpu
        view_cpu = server_cpu(proc.pid) - cpu - concurrency * sign_in_cpu / sign_ins  # less the clients' sign-ins
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"bench web: {sign_ins:,} portal sign-ins (GET /signin, the provider's form, POST the password with CSRF, "
        f"the callback; argon2id at 1 MiB and one pass) over {concurrency} clients in {sign_in_seconds:.2f} s = "
        f"{sign_ins / sign_in_seconds:,.0f} sign-ins/s; server CPU {1000 * sign_in_cpu / sign_ins:.2f} ms per sign-in",
        f"bench web: {views:,} \"my notices\" page views (GET /notices, {notices:,} notices in the account) over "
        f"{concurrency} signed-in clients, {workers or os.cpu_count()} serve process(es), "
        f"{'PostgreSQL' if store_url else 'SQLite'}, in {view_seconds:.2f} s = "
        f"{views / view_seconds:,.0f} page views/s; "
        f"server CPU {1000 * view_cpu / views:.2f} ms per page view (the benchmark's client: "
        f"{1000 * client_cpu / views:.2f} ms; bar: 500/s)",
        f"bench web: load average during the run {load} (the machine is shared: lower bounds)",
    ]


@click.command("web")
@click.option("--notices", default=1000, show_default=True, help="notices delivered to the signed-in citizen")
@click.option("--sign-ins", default=300, show_default=True, help="portal sign-ins to time")
@click.option("--views", default=5000, show_default=True, help="\"my notices\" page views to time")
@click.option("--concurrency", default=8, show_default=True, help="clients at once")
@click.option("--workers", default=1, show_default=True,
              help="server.workers: processes serving the citizens' HTTP (0: one per core)")
@click.option("--set", "overrides", multiple=True, help="extra config override for the server (section.key=value)")
@click.option("--profile", type=click.Path(dir_okay=False, path_type=Path),
              help="run the server under cProfile (its event loop thread) and write the statistics here")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="work directory (default: a temporary one, removed afterwards)")
@store_url_option
def command(notices: int, sign_ins: int, views: int, concurrency: int, workers: int, overrides: tuple[str, ...],
            profile: Path | None, work_dir: Path | None, store_url: str) -> None:
    """Start `civicmail serve` on loopback and time portal sign-ins and "my notices" page views with NOTICES notices."""
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-web-") as tmp, throwaway_store(store_url) as url:
        root = work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for line in run(root, notices, sign_ins, views, concurrency, overrides, profile, workers, url):
            click.echo(line)

"""Shared by the benchmarks: generated citizens, resident memory and CPU of processes, a throwaway
data directory."""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import random
import resource
import secrets
from collections.abc import Iterator
from pathlib import Path

import click

from ..identity import idnumber

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建文辉玲兰红霞鑫波宁浩宇欣怡子涵梓轩佳琪思雨晨阳嘉豪俊杰雅婷"
EPOCH = dt.date(1940, 1, 1)


def citizen_number(i: int) -> str:
    """A valid, unique resident ID number for the i-th generated citizen."""
    birth = EPOCH + dt.timedelta(days=i % 25000)
    return idnumber.make(f"{330101 + (i // 25_000_000)}", birth, (i // 25000) % 1000)


def citizen_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def write_citizens_csv(path: Path, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "id_number", "phone"])
        for i in range(count):
            w.writerow([citizen_name(rng), citizen_number(i), f"1{rng.randrange(3, 9)}{rng.randrange(10**9):09d}"])


#: clock ticks a second, the unit of ``cpu_ticks``
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[int, int, int, int] | None:
    """(utime, stime, cutime, cstime) of a process from /proc/PID/stat, in clock ticks (the last
    two: its waited-for children's); None if it is gone or not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def store_url_option(f):
    """``--store-url URL``: the benchmarks that time the store take it (issue 13)."""
    return click.option(
        "--store-url", default="", metavar="URL",
        help="run on PostgreSQL: a postgresql+psycopg:// URL naming a server and a database to connect to; the run "
             "creates a throwaway database civicmail_bench_<random> on that server and drops it at the end "
             "(default: SQLite in the data directory)")(f)


@contextlib.contextmanager
def throwaway_store(url: str) -> Iterator[str]:
    """The ``store.url`` a bench run writes into its config: "" (the SQLite file in the data
    directory) without ``url``; with a PostgreSQL ``url``, a fresh database on that server, dropped
    (WITH (FORCE)) when the run ends, however it ends."""
    if not url:
        yield ""
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint="--store-url") from None
    if parsed.get_backend_name() != "postgresql":
        raise click.BadParameter("a PostgreSQL URL (leave it out for SQLite)", param_hint="--store-url")
    name = f"civicmail_bench_{secrets.token_hex(6)}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        click.echo(f"store: PostgreSQL database {name} on {parsed.host or 'localhost'}:{parsed.port or 5432} "
                   "(made for this run)")
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            click.echo(f"store: database {name} dropped")
    finally:
        admin.dispose()

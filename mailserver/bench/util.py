"""Shared by the benchmarks: generated citizens, resident memory, a throwaway data directory."""
from __future__ import annotations

import csv
import datetime as dt
import random
import resource
from pathlib import Path

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


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024

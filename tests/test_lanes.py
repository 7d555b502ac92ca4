"""The heavy lane (mailserver/lanes.py): one owner's jobs run at most per_owner at a time, another
owner's job does not wait behind them, and a job keeps its slot until its thread is done."""
from __future__ import annotations

import asyncio
import threading
import time

from mailserver.lanes import HeavyLane


def test_one_owner_is_held_to_its_share_and_another_is_not_held_up(caplog):
    caplog.set_level("INFO", "civicmail.lanes")
    lane = HeavyLane(threads=4, per_owner=2)
    release = threading.Event()
    running: list[str] = []
    most = [0]
    lock = threading.Lock()

    def job(name: str) -> str:
        with lock:
            running.append(name)
            most[0] = max(most[0], sum(1 for n in running if n.startswith("a")))
        if name.startswith("a"):
            release.wait(10)
        with lock:
            running.remove(name)
        return name

    async def main():
        hogs = [asyncio.ensure_future(lane.run("a", job, f"a{i}")) for i in range(8)]
        await asyncio.sleep(0.2)
        start = time.monotonic()
        assert await lane.run("b", job, "b") == "b"  # another owner: a free thread at once
        waited = time.monotonic() - start
        assert lane.busy_owners() == 1  # "b" is gone, "a" still has jobs queued
        release.set()
        done = await asyncio.gather(*hogs)
        return waited, done

    try:
        waited, done = asyncio.run(main())
    finally:
        lane.shutdown()
    assert waited < 0.5
    assert done == [f"a{i}" for i in range(8)]
    assert most[0] == 2
    assert lane.busy_owners() == 0
    # four times its share queued: the operator is told, once
    assert [r.getMessage() for r in caplog.records] == ["heavy lane: owner=a has 8 jobs waiting or running (2 at a time)"]


def test_a_cancelled_job_keeps_its_slot_until_its_thread_is_done():
    lane = HeavyLane(threads=2, per_owner=1)
    release = threading.Event()
    order: list[str] = []

    def slow() -> None:
        release.wait(10)
        order.append("slow done")

    def quick() -> None:
        order.append("quick ran")

    async def main():
        first = asyncio.ensure_future(lane.run("a", slow))
        await asyncio.sleep(0.1)
        first.cancel()  # the session went away; its thread still runs
        second = asyncio.ensure_future(lane.run("a", quick))
        await asyncio.sleep(0.3)
        assert order == []  # the owner's only slot is still taken
        release.set()
        await second

    try:
        asyncio.run(main())
    finally:
        lane.shutdown()
    assert order == ["slow done", "quick ran"]

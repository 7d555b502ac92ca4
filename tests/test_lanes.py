"""The lanes (mailserver/lanes.py). The heavy lane: one owner's jobs run at most per_owner at a time,
another owner's job does not wait behind them, and a job keeps its slot until its thread is done. The
batch lanes (read and write): what queues meanwhile runs as one batch, each caller gets its own answer."""
from __future__ import annotations

import asyncio
import contextlib
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


def test_a_heavy_jobs_error_reaches_its_caller_and_a_job_cancelled_before_it_started_never_runs():
    lane = HeavyLane(threads=1, per_owner=2)
    release = threading.Event()
    ran: list[str] = []

    def fails() -> None:
        raise LookupError("no such message")

    def slow() -> str:
        release.wait(10)
        ran.append("slow")
        return "slow"

    def never() -> None:
        ran.append("never")

    async def main():
        try:
            await lane.run("a", fails)
        except LookupError as exc:
            failed = str(exc)
        assert lane.busy_owners() == 0  # its slot given back with the answer
        first = asyncio.ensure_future(lane.run("a", slow))
        queued = asyncio.ensure_future(lane.run("a", never))  # behind "slow": the only thread
        await asyncio.sleep(0.1)
        queued.cancel()
        await asyncio.sleep(0.1)
        release.set()
        return failed, await first, queued.cancelled()

    try:
        failed, first, cancelled = asyncio.run(main())
    finally:
        lane.shutdown()
    assert (failed, first, cancelled) == ("no such message", "slow", True)
    assert ran == ["slow"]
    assert lane.busy_owners() == 0


# -- the read and write lanes (BatchLane) ------------------------------------------------------------

def test_a_batch_lane_takes_what_queued_meanwhile_in_one_batch_and_answers_each_caller():
    """... and the jobs that need not be durable (flag changes) first, in a batch of their own.
    A batch still open takes the jobs of its kind at the front of the queue ("a" joins "first",
    whose transaction is open while it waits); the first of another kind ("x") stops that."""
    from mailserver.lanes import BatchLane

    batches: list[list[str]] = []
    durables: list[bool] = []
    started = threading.Event()
    release = threading.Event()

    @contextlib.contextmanager
    def around(durable: bool):
        batches.append([])
        durables.append(durable)
        yield

    def job(name: str) -> str:
        batches[-1].append(name)
        if name == "first":
            started.set()
            release.wait(10)
        if name == "bad":
            raise ValueError("only this caller hears of it")
        return name.upper()

    lane = BatchLane(1, "t", around=around)

    async def main():
        first = asyncio.ensure_future(lane.run(job, "first"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        rest = [asyncio.ensure_future(lane.run(job, n, durable=n not in ("x", "y")))
                for n in ("a", "x", "bad", "b", "y", "c")]
        await asyncio.sleep(0.1)  # all six queued while the thread is busy with "first"
        release.set()
        return await first, await asyncio.gather(*rest, return_exceptions=True)

    try:
        first, rest = asyncio.run(main())
    finally:
        lane.shutdown()
    assert first == "FIRST"
    assert rest[0] == "A" and rest[1] == "X" and rest[3:] == ["B", "Y", "C"]
    assert isinstance(rest[2], ValueError)
    assert batches == [["first", "a"], ["x", "y"], ["bad", "b", "c"]]
    assert durables == [True, False, True]


def test_a_failed_batch_fails_each_of_its_jobs_and_then_runs_after_the_batch_in_the_lane_thread():
    from mailserver.lanes import BatchLane

    events: list[str] = []
    fail = [False]
    opened: list[str] = []

    class Held:
        def close(self) -> None:
            opened.append(f"closed in {threading.current_thread().name}")

    def init() -> Held:
        opened.append(f"opened in {threading.current_thread().name}")
        return Held()

    @contextlib.contextmanager
    def around(durable: bool):
        yield
        events.append("committed" if not fail[0] else "commit failed")
        if fail[0]:
            raise OSError("disk full")

    writes = BatchLane(1, "writes", around=around, init=init)

    def write(n: int) -> int:
        events.append(f"write {n}")
        return n

    def look(n: int) -> tuple[int, str]:
        events.append(f"look {n}")
        return n, threading.current_thread().name

    async def main():
        ok = await writes.run(write, 1, then=look)
        fail[0] = True
        try:
            await writes.run(write, 2, then=look)
        except OSError as exc:
            failed = exc
        return ok, failed

    try:
        ok, failed = asyncio.run(main())
    finally:
        writes.shutdown()
    assert ok == (1, "writes-0")  # the look ran on the lane's thread, after the batch
    assert str(failed) == "disk full"
    # each look after its batch's COMMIT; none for the batch that failed
    assert events == ["write 1", "committed", "look 1", "write 2", "commit failed"]
    # what init made in the thread is closed there as it ends
    assert opened == ["opened in writes-0", "closed in writes-0"]


def test_a_job_whose_caller_stopped_waiting_before_it_started_never_runs():
    from mailserver.lanes import BatchLane

    ran: list[str] = []
    release = threading.Event()
    lane = BatchLane(1, "t")

    async def main():
        busy = asyncio.ensure_future(lane.run(release.wait, 10))
        await asyncio.sleep(0.1)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(lane.run(ran.append, "late"), 0.1)  # given up on while queued
        release.set()
        await busy
        await lane.run(ran.append, "next")

    try:
        asyncio.run(main())
    finally:
        lane.shutdown()
    assert ran == ["next"]


def test_a_spill_lane_sends_past_it_an_owners_extra_writes_the_big_ones_and_those_queued_behind_stuck_threads():
    """lanes.SpillLane (PostgreSQL's IMAP writes): an owner has at most per_owner writes on it,
    a big write never goes on it, and once every thread has been stuck in a write for STALL
    seconds, the writes queued behind them and the next ones run on the spill executor."""
    import concurrent.futures

    from mailserver.lanes import SpillLane

    spill = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="spill")
    lane = SpillLane(2, spill, per_owner=1)
    release = threading.Event()

    def where(_: object = None) -> str:
        return threading.current_thread().name.split("-")[0].split("_")[0]

    def stuck() -> str:
        release.wait(30)
        return where()

    async def main():
        assert await lane.run(where, owner="a") == "write"
        assert await lane.run(where, owner="a", big=True) == "spill"
        a = asyncio.ensure_future(lane.run(stuck, owner="a"))
        await asyncio.sleep(0.05)
        assert await lane.run(where, owner="a") == "spill"  # "a" has its one write on the lane
        assert await lane.run(where, owner="b") == "write"  # the other thread, at once
        b = asyncio.ensure_future(lane.run(stuck, owner="b"))
        await asyncio.sleep(0.01)
        # both threads stuck: a write queued now runs on the spill executor once they have been
        # for STALL seconds, then so does a new one at once; then their answers (``then``)
        queued = await asyncio.wait_for(lane.run(where, owner="c", then=lambda w: (w, where())), 5)
        assert queued == ("spill", "spill")
        assert await asyncio.wait_for(lane.run(where, owner="d"), 5) == "spill"
        release.set()
        assert await a == "write" and await b == "write"
        assert await lane.run(where, owner="c") == "write"  # free again
        assert lane._owners == {}

    try:
        asyncio.run(main())
    finally:
        release.set()
        lane.shutdown()
        spill.shutdown()
    assert lane.spilled == 4

"""Lanes of threads beside the event loop.

The heavy lane (``HeavyLane``): threads for the work whose cost a client chooses (SEARCH over a
folder, FETCH of message bodies, LIST with wildcards), apart from the store threads that logins,
deliveries and every other command use, so that no number of such commands can make those wait.
The read and write lanes (``BatchLane``) take the cheap store work of every command in batches.

Each owner (an account) runs at most ``per_owner`` jobs at a time; the others wait on the event
loop, holding no thread, so one citizen's sixteen searching connections take no more of the
lane than two. A job holds its owner's slot until its thread has finished, even if the session
that asked for it is gone.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import threading
from typing import Any, Callable, Hashable, TypeVar

log = logging.getLogger("civicmail.lanes")
T = TypeVar("T")
#: an owner with this many times its share of jobs queued is logged (once each time it gets there)
_CROWDED = 4


class _Gate:
    __slots__ = ("free", "users")

    def __init__(self, free: asyncio.Semaphore) -> None:
        self.free = free
        #: jobs of this owner waiting or running; the gate is dropped at zero
        self.users = 0


class HeavyLane:
    def __init__(self, threads: int, per_owner: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="heavy")
        self.per_owner = per_owner
        self._gates: dict[Hashable, _Gate] = {}

    async def run(self, owner: Hashable, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(owner)
        if gate is None:
            gate = self._gates[owner] = _Gate(asyncio.Semaphore(self.per_owner))
        gate.users += 1
        if gate.users == _CROWDED * self.per_owner:
            log.info("heavy lane: owner=%s has %d jobs waiting or running (%d at a time)", owner, gate.users,
                     self.per_owner)
        try:
            await gate.free.acquire()
        except BaseException:
            self._leave(owner, gate)
            raise

        def done(_: concurrent.futures.Future) -> None:
            gate.free.release()
            self._leave(owner, gate)

        job = self.executor.submit(functools.partial(fn, *args))
        # released when the thread is done (or the job was cancelled before it started)
        job.add_done_callback(lambda f: _call_soon(loop, done, f))
        return await asyncio.wrap_future(job)

    def _leave(self, owner: Hashable, gate: _Gate) -> None:
        gate.users -= 1
        if not gate.users and self._gates.get(owner) is gate:
            del self._gates[owner]

    def busy_owners(self) -> int:
        """Owners with jobs waiting or running (for tests and diagnostics)."""
        return len(self._gates)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nothing waits any more
        pass


class BatchLane:
    """A few threads that take every job queued when they wake and hand the results back to the
    event loop in one wake-up, not one per job: under load a handful of commands cost one pair
    of context switches instead of one pair each, and one thread does not pass the GIL around as
    sixteen do. Jobs are bounded by what queues them (one command in flight per session). A job
    whose caller stopped waiting (cancelled, timed out) before it started is not run.

    ``around``: a context manager factory wrapped around each batch's jobs (the write lane's one
    transaction), called with whether the batch's jobs must be durable when it ends; if leaving
    it raises, every job of the batch gets that exception. Jobs queued with ``durable=False``
    (flag changes) go in a batch of their own, before the others: the durable ones' wait for
    the disk does not hold them up. A job's
    ``then`` runs after it in the same thread once ``around`` has been left (the write lane's
    look after its COMMIT). ``init``: run first in each thread (a connection of its own:
    ``store.driver.OwnReader``); what it returns is closed as the thread ends.
    """

    #: jobs run in one batch at most (a long queue still returns its first answers)
    BATCH = 32

    def __init__(self, threads: int = 1, name: str = "read",
                 around: Callable[[bool], contextlib.AbstractContextManager] | None = None,
                 init: Callable[[], Any] | None = None) -> None:
        self._init = init
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = 0
        self._stopping = False
        self._around = around
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[..., T], *args: Any, then: Callable[[T], Any] | None = None,
                  durable: bool = True) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue([(loop, future, fn, args, then, durable)])
        return await future

    def _queue(self, jobs: list) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the lane is shut down")
            self._jobs.extend(jobs)
            if self._idle:
                self._cond.notify()

    def _work(self) -> None:
        held = self._init() if self._init is not None else None
        try:
            self._serve()
        finally:
            if held is not None:
                held.close()

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            with self._cond:
                while not jobs:
                    if self._stopping:
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                batch = [jobs.popleft() for _ in range(min(len(jobs), self.BATCH))]
            batch = [job for job in batch if not job[1].cancelled()]  # its caller stopped waiting
            light = [job for job in batch if not job[5]]
            if light and len(light) < len(batch):
                self._run_batch(light, False)
                self._run_batch([job for job in batch if job[5]], True)
            else:
                self._run_batch(batch, not light)

    def _run_batch(self, batch: list, durable: bool) -> None:
        outcomes = []
        try:
            with self._around(durable) if self._around is not None else contextlib.nullcontext():
                for loop, future, fn, args, then, _ in batch:
                    try:
                        outcomes.append([loop, future, True, fn(*args), then])
                    except BaseException as exc:  # noqa: BLE001 - the caller gets it
                        outcomes.append([loop, future, False, exc, None])
        except BaseException as exc:  # noqa: BLE001 - the batch failed as a whole (its COMMIT)
            outcomes = [[loop, future, False, exc, None] for loop, future, *_ in batch]
        done: dict[asyncio.AbstractEventLoop, list] = {}
        for outcome in outcomes:
            loop, future, ok, value, then = outcome
            if ok and then is not None:
                try:
                    value = then(value)
                except BaseException as exc:  # noqa: BLE001
                    ok, value = False, exc
            done.setdefault(loop, []).append((future, ok, value))
        for loop, settled in done.items():
            _call_soon(loop, _settle, settled)

    def shutdown(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()


def _settle(outcomes: list) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

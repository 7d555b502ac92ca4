"""Lanes of threads beside the event loop.

The heavy lane (``HeavyLane``): threads for the work whose cost a client chooses (SEARCH over a
folder, FETCH of message bodies, LIST with wildcards), apart from the store threads that logins,
deliveries and every other command use, so that no number of such commands can make those wait.
The read and write lanes (``BatchLane``) take the cheap store work of every command in batches;
on PostgreSQL the write lane (``SpillLane``) takes one write at a time per thread, within bounds.

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
import time
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

        answer = loop.create_future()

        def done(job: concurrent.futures.Future) -> None:
            gate.free.release()
            self._leave(owner, gate)
            if answer.done():  # its caller stopped waiting
                return
            if job.cancelled():
                answer.cancel()
            elif (error := job.exception()) is not None:
                answer.set_exception(error)
            else:
                answer.set_result(job.result())

        job = self.executor.submit(functools.partial(fn, *args))
        # The slot is released when the thread is done (or the job was cancelled before it
        # started), and the answer handed over in the same wake-up of the loop: one
        # call_soon_threadsafe a job, where asyncio.wrap_future added a second.
        job.add_done_callback(lambda f: _call_soon(loop, done, f))
        answer.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        return await answer

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
    it raises, every job of the batch gets that exception; jobs queued while the batch runs join
    it before ``around`` is left (``_top_up``). Jobs queued with ``durable=False``
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
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[..., T], *args: Any, then: Callable[[T], Any] | None = None,
                  durable: bool = True, owner: Hashable = None, big: bool = False) -> T:
        """``fn(*args)`` on the lane (``owner`` and ``big``: for ``SpillLane``)."""
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

    def _work(self, index: int) -> None:
        held = self._init() if self._init is not None else None
        try:
            self._serve(index)
        finally:
            if held is not None:
                held.close()

    def _wait(self) -> bool:
        """Holding the lock: wait until a job is queued (True) or the lane stops (False)."""
        while not self._jobs:
            if self._stopping:
                return False
            self._idle += 1
            self._cond.wait()
            self._idle -= 1
        return True

    def _serve(self, index: int) -> None:
        jobs = self._jobs
        while True:
            with self._cond:
                if not self._wait():
                    return
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
                i = 0
                while i < len(batch):
                    loop, future, fn, args, then, _ = batch[i]
                    i += 1
                    try:
                        outcomes.append([loop, future, True, fn(*args), then])
                    except BaseException as exc:  # noqa: BLE001 - the caller gets it
                        outcomes.append([loop, future, False, exc, None])
                    if i == len(batch) and self._around is not None:
                        batch.extend(self._top_up(durable, self.BATCH - len(batch)))
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

    def _top_up(self, durable: bool, room: int) -> list:
        """Jobs queued while the batch ran (``around``: its transaction still open), taken into
        it from the front of the queue while they are of the batch's kind (durable or not: a job
        without fsync never waits for one), up to ``room``. The write lane's BEGIN may wait for another
        process's writer (store/writequeue.py); what queued meanwhile shares its COMMIT instead
        of waiting again for one of its own."""
        out: list = []
        with self._cond:
            jobs = self._jobs
            while jobs and len(out) < room and jobs[0][5] == durable:
                job = jobs.popleft()
                if not job[1].cancelled():  # its caller stopped waiting
                    out.append(job)
        return out

    def shutdown(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()


class SpillLane(BatchLane):
    """On PostgreSQL, the IMAP writes' lane (imap.pg_write_threads): a few threads instead of
    the store threads' sixteen passing the GIL around, each write its own transaction, within
    bounds that keep one slow write (a row another node holds, a big COPY) from stalling the
    node's other writes:

    - a thread takes one write at a time (none waits behind another's batch) and hands each
      answer back as soon as it has it;
    - an owner (an account) has at most ``per_owner`` writes on the lane, queued or running;
      its next ones run on ``spill`` (the store threads), as do writes marked ``big`` (several
      messages, COPY, MOVE: a cost the client chooses);
    - once every thread has been in its write for over ``STALL`` seconds (the lane is stalled),
      new writes run on ``spill``, and so do those queued then (a timer on the event loop,
      one at a time, armed while writes are queued, looks every ``STALL`` seconds).

    A write queued behind stuck threads thus moves to ``spill`` within about twice ``STALL``
    seconds, and no owner's writes take more than ``per_owner`` of the threads."""

    #: seconds a thread may be in one write before it counts as stalled (a write takes about
    #: a millisecond, tens under load)
    STALL = 0.1

    def __init__(self, threads: int, spill: concurrent.futures.Executor, per_owner: int,
                 init: Callable[[], Any] | None = None) -> None:
        self._spill = spill
        self.per_owner = per_owner
        #: owner -> its writes on the lane, queued or running
        self._owners: dict[Hashable, int] = {}
        #: when each thread's write began (0.0: none running)
        self._since = [0.0] * threads
        self._timer: asyncio.TimerHandle | None = None
        self.spilled = 0  # writes sent to ``spill`` (for tests and diagnostics)
        super().__init__(threads, "write", init=init)

    async def run(self, fn: Callable[..., T], *args: Any, then: Callable[[T], Any] | None = None,
                  durable: bool = True, owner: Hashable = None, big: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        owners = self._owners
        with self._cond:
            if self._stopping:
                raise RuntimeError("the lane is shut down")
            mine = owners.get(owner, 0)
            here = not big and mine < self.per_owner and not self._stalled()
            if here:
                owners[owner] = mine + 1
                self._jobs.append((loop, future, fn, args, then, durable, owner))
                if self._idle:
                    self._cond.notify()
                if self._timer is None:  # (an idle thread woken may not have taken it yet)
                    self._timer = loop.call_later(self.STALL, self._watch)
        if here:
            return await future
        self.spilled += 1
        return await loop.run_in_executor(self._spill, run_then, fn, args, then)

    def _stalled(self) -> bool:
        """Every thread in a write begun over STALL seconds ago (called holding the lock)."""
        now = time.monotonic()
        return all(began and now - began > self.STALL for began in self._since)

    def _release(self, owner: Hashable) -> None:
        """One write of ``owner`` off the lane (called holding the lock)."""
        left = self._owners[owner] - 1
        if left:
            self._owners[owner] = left
        else:
            del self._owners[owner]

    def _watch(self) -> None:
        """On the event loop, STALL seconds after a write was queued: if the lane is stalled,
        its queued writes go to ``spill``; while writes are queued, again STALL seconds later."""
        self._timer = None
        moved: list = []
        with self._cond:
            if self._stopping or not self._jobs:
                return
            if self._stalled():
                moved = list(self._jobs)
                self._jobs.clear()
                for job in moved:
                    self._release(job[6])
            else:
                self._timer = asyncio.get_running_loop().call_later(self.STALL, self._watch)
        for loop, future, fn, args, then, _, _ in moved:
            if not future.cancelled():
                self.spilled += 1
                done = self._spill.submit(run_then, fn, args, then)
                done.add_done_callback(functools.partial(_hand_over, loop, future))

    def _serve(self, index: int) -> None:
        jobs, since = self._jobs, self._since
        while True:
            with self._cond:
                if not self._wait():
                    return
                loop, future, fn, args, then, _, owner = jobs.popleft()
                since[index] = time.monotonic()
            run = not future.cancelled()  # else its caller stopped waiting
            if run:
                try:
                    ok, value = True, run_then(fn, args, then)
                except BaseException as exc:  # noqa: BLE001 - the caller gets it
                    ok, value = False, exc
            with self._cond:  # off the lane before its caller hears (and may write again)
                since[index] = 0.0
                self._release(owner)
            if run:
                _call_soon(loop, _settle, [(future, ok, value)])


def run_then(fn: Callable[..., T], args: tuple, then: Callable[[T], Any] | None) -> Any:
    """``fn(*args)``, then ``then`` of its result if given, in the same thread."""
    result = fn(*args)
    return result if then is None else then(result)


def _hand_over(loop: asyncio.AbstractEventLoop, future: asyncio.Future, done: concurrent.futures.Future) -> None:
    """A write moved to ``spill``: its outcome to the future its caller awaits."""
    error = done.exception()
    _call_soon(loop, _settle, [(future, error is None, done.result() if error is None else error)])


def _settle(outcomes: list) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

"""The heavy lane: threads for the work whose cost a client chooses (SEARCH over a folder, FETCH of
message bodies, LIST with wildcards), apart from the store threads that logins, deliveries and
every other command use, so that no number of such commands can make those wait.

Each owner (an account) runs at most ``per_owner`` jobs at a time; the others wait on the event
loop, holding no thread, so one citizen's sixteen searching connections take no more of the
lane than two. A job holds its owner's slot until its thread has finished, even if the session
that asked for it is gone.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
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

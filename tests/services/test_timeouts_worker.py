"""The citizens' services worker stops when it is woken (new mail) as `serve` stops it: its
loop waited with Python 3.11's ``asyncio.wait_for``, which dropped that cancellation, and the
stop waited forever (seen in CI as a test server that did not stop); it waits with
``timeouts.within`` now."""
from __future__ import annotations

import asyncio


def test_services_worker_stops_when_woken_as_it_is_stopped(server):
    worker = server.worker

    async def wake_and_stop() -> bool:
        # let its rounds since the start end, so that it waits for a wake-up (or its poll)
        for _ in range(100):
            await asyncio.sleep(0.05)
            waiting = worker._task._fut_waiter
            if waiting is not None and not waiting.done() and not worker._wake.is_set():
                break
        task = worker._task
        worker._wake.set()  # the wake-up and the cancel in the same turn of the loop
        async with asyncio.timeout(10):  # a bound on a hang, not a timing
            await worker.stop()
        return task.cancelled() and worker._task is None

    assert server.call(wake_and_stop(), timeout=60)

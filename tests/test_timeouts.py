"""``timeouts.within``: a time limit on an await that never loses the caller's cancellation
(Python 3.11's ``asyncio.wait_for`` drops one that arrives as the awaited thing finishes), and
the citizens' services worker, whose stop hung on exactly that: a wake-up (new mail) at the
moment `serve` stopped it."""
from __future__ import annotations

import asyncio

import pytest

from mailserver.timeouts import within


async def _loop_until_cancelled(event: asyncio.Event, rounds: list) -> None:
    """A service's loop: wait for a wake-up or a time-out, do a round, again."""
    while True:
        try:
            await within(event.wait(), 30)
        except TimeoutError:
            pass
        event.clear()
        rounds.append(1)


def test_a_cancel_that_comes_as_the_wait_ends_stops_the_loop():
    async def main() -> list:
        event, rounds = asyncio.Event(), []
        task = asyncio.create_task(_loop_until_cancelled(event, rounds))
        await asyncio.sleep(0)  # it waits
        event.set()  # the wake-up and the cancel in the same turn of the loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):  # wait_for would leave the loop waiting its 30 s again
                await task
        return rounds

    assert asyncio.run(main()) == []  # cancelled inside the wait: no round after it


def test_within_times_out_and_passes_results_and_errors():
    async def main() -> None:
        assert await within(asyncio.sleep(0, "done"), 5) == "done"
        assert await within(asyncio.sleep(0, "no limit"), None) == "no limit"
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(5), 0.05)

        async def fails() -> None:
            raise ValueError("its own error")

        with pytest.raises(ValueError, match="its own error"):
            await within(fails(), 5)
        # a shielded future outlives the time-out, as with wait_for
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await within(asyncio.shield(future), 0.05)
        assert not future.cancelled()
        future.set_result(1)

    asyncio.run(main())

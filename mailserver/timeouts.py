"""A time limit on an await that never loses a cancellation.

``asyncio.wait_for`` in Python 3.11 runs what it awaits as a task of its own, and when a
cancellation of the caller arrives just as that task finishes, it returns the result and drops
the cancellation (CPython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``). A service
loop written ``while True: await wait_for(event.wait(), t)`` then goes on as if never cancelled,
and whoever awaits its stop waits forever: it happened to the citizens' services worker when its
wake-up (new mail) came as `serve` stopped. ``within`` awaits in the caller's own task under
``asyncio.timeout``, where a cancellation always reaches the caller."""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, or TimeoutError after ``seconds`` (None: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable

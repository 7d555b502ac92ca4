"""Mailbox change notices between sessions of one process (and, on PostgreSQL, between nodes).

Writers call ``changed(folder_ids)`` after their transaction commits; IMAP sessions subscribe to
the folder they have selected. Safe to call from any thread.
"""
from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Callable, Iterable

Listener = Callable[[int], None]


class ChangeHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, set[tuple[asyncio.AbstractEventLoop | None, Listener]]] = defaultdict(set)

    def subscribe(self, folder_id: int, listener: Listener, loop: asyncio.AbstractEventLoop | None = None) -> None:
        with self._lock:
            self._listeners[folder_id].add((loop, listener))

    def unsubscribe(self, folder_id: int, listener: Listener, loop: asyncio.AbstractEventLoop | None = None) -> None:
        with self._lock:
            entries = self._listeners.get(folder_id)
            if entries:
                entries.discard((loop, listener))
                if not entries:
                    del self._listeners[folder_id]

    def changed(self, folder_ids: Iterable[int]) -> None:
        with self._lock:
            targets = [(fid, entry) for fid in set(folder_ids) for entry in self._listeners.get(fid, ())]
        for fid, (loop, listener) in targets:
            if loop is None:
                listener(fid)
            else:
                try:
                    loop.call_soon_threadsafe(listener, fid)
                except RuntimeError:  # that loop has closed
                    pass


#: the process's hub (one per process, like the engine)
hub = ChangeHub()

"""Recipient lookup for RCPT TO, with a short cache (one query per RCPT would cost a thread
hop and a read transaction each; an address changes state rarely)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..store import Store
from ..store.addressing import resolve_local

#: seconds a lookup is trusted; a newly disabled account may receive mail this long
CACHE_SECONDS = 10.0
CACHE_MAX = 50_000


@dataclass(frozen=True)
class Mailbox:
    account_id: int
    #: pending (bulk-created, awaiting activation), active, disabled
    state: str

    @property
    def receives(self) -> bool:
        # A pending account receives its notices before its owner first logs in.
        return self.state in ("active", "pending")


def find_mailbox(store: Store, address: str) -> Mailbox | None:
    """Blocking: the account for a local address (``local+detail@`` reaches ``local@``,
    RFC 5233), or None."""
    with store.reader() as s:
        account = resolve_local(s, address)
        return Mailbox(account.id, account.state) if account is not None else None


class MailboxCache:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, Mailbox | None]] = {}

    def get(self, address: str) -> tuple[bool, Mailbox | None]:
        """(hit, mailbox)"""
        entry = self._entries.get(address)
        if entry is None or entry[0] < self._clock():
            return False, None
        return True, entry[1]

    def put(self, address: str, mailbox: Mailbox | None) -> None:
        if len(self._entries) >= CACHE_MAX:
            self._entries.clear()
        self._entries[address] = (self._clock() + CACHE_SECONDS, mailbox)

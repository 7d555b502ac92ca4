"""What SORT and THREAD read of a folder: a few short columns per message (cached at delivery,
``mime.sortkeys``), in UID order, in batches, as plain tuples through the driver's cursor
(blocking: call through the heavy lane). No message is read or parsed."""
from __future__ import annotations

from typing import Sequence

from .db import Store
from .driver import driver_rows, raw_reader

#: INTERNALDATE in seconds since the epoch
_ARRIVAL = {"sqlite": "CAST(strftime('%s', m.internaldate) AS INTEGER)",
            "postgresql": "CAST(EXTRACT(EPOCH FROM m.internaldate) AS BIGINT)"}
#: name -> SQL of each value a sort or a thread can ask for (``m`` the message, ``s`` what was
#: stored for sorting its content); "sent" is RFC 5256 2.2's sent date: the Date field, else
#: INTERNALDATE (worked out only for the few messages without a Date)
_VALUES = {"size": "m.size", "subject": "s.sort_subject", "reply": "s.sort_reply", "from": "s.sort_from",
           "to": "s.sort_to", "cc": "s.sort_cc", "display_from": "s.display_from", "display_to": "s.display_to",
           "message_id": "s.message_id", "thread_refs": "s.thread_refs"}
NAMES = frozenset(_VALUES) | {"arrival", "sent"}


def _value(name: str, dialect: str) -> str:
    if name == "arrival":
        return _ARRIVAL[dialect]
    if name == "sent":
        return f"COALESCE(s.sort_date, {_ARRIVAL[dialect]})"
    return _VALUES[name]


def sort_rows(store: Store, account_id: int, folder_id: int, names: Sequence[str], after_uid: int, hi_uid: int,
              limit: int) -> list[tuple]:
    """Up to ``limit`` rows ``(uid, *values)`` of the folder's messages with after_uid < UID <=
    hi_uid, in UID order; ``names`` from NAMES. ``arrival`` is INTERNALDATE in seconds
    since the epoch; ``date`` the Date field's (NULL if it had none)."""
    with raw_reader(store) as r:
        values = [_value(n, store.dialect) for n in names]
        join = " JOIN content_sort s ON s.content_id = m.content_id" if set(names) - {"size", "arrival"} else ""
        return driver_rows(r, f"SELECT m.uid{''.join(', ' + v for v in values)} FROM message m{join} "
                              f"WHERE m.account_id = ? AND m.folder_id = ? AND m.uid > ? AND m.uid <= ? ORDER BY m.uid "
                              "LIMIT ?", account_id, folder_id, after_uid, hi_uid, limit)

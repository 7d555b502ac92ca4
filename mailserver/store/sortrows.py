"""What SORT and THREAD read of a folder: a few short columns per message (cached at delivery,
``mime.sortkeys``), in UID order, in batches, as plain tuples through the driver's cursor
(blocking: call through the heavy lane). No message is read or parsed."""
from __future__ import annotations

from typing import Sequence

from .db import Store
from .driver import driver_rows, raw_reader

#: name -> SQL of each value a sort or a thread can ask for (``m`` the message, ``c`` its content)
_ARRIVAL = {"sqlite": "CAST(strftime('%s', m.internaldate) AS INTEGER)",
            "postgresql": "CAST(EXTRACT(EPOCH FROM m.internaldate) AS BIGINT)"}
_VALUES = {"size": "m.size", "date": "c.sort_date", "subject": "c.sort_subject", "reply": "c.sort_reply",
           "from": "c.sort_from", "to": "c.sort_to", "cc": "c.sort_cc", "display_from": "c.display_from",
           "display_to": "c.display_to", "message_id": "c.message_id", "thread_refs": "c.thread_refs"}
NAMES = frozenset(_VALUES) | {"arrival"}


def sort_rows(store: Store, folder_id: int, names: Sequence[str], after_uid: int, hi_uid: int,
              limit: int) -> list[tuple]:
    """Up to ``limit`` rows ``(uid, *values)`` of the folder's messages with after_uid < UID <=
    hi_uid, in UID order; ``names`` from NAMES. ``arrival`` is INTERNALDATE in seconds
    since the epoch; ``date`` the Date field's (NULL if it had none)."""
    with raw_reader(store) as r:
        values = [_ARRIVAL[store.dialect] if n == "arrival" else _VALUES[n] for n in names]
        join = " JOIN content c ON c.id = m.content_id" if any(n in _VALUES and n != "size" for n in names) else ""
        return driver_rows(r, f"SELECT m.uid{''.join(', ' + v for v in values)} FROM message m{join} "
                              f"WHERE m.folder_id = ? AND m.uid > ? AND m.uid <= ? ORDER BY m.uid LIMIT ?", folder_id,
                           after_uid, hi_uid, limit)

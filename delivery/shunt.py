"""What the watchers do with a drop that fails as a whole (Mailman's shunt): whatever the
exception, the drop is set aside with its reason (a spooled file into ``failed/`` with a note, a
mailed drop answered) and the watcher goes on with the next one; nothing is retried on every poll.

One kind of failure is not the drop's: the store being unreachable. Then the drop stays where it
is and the watcher stops its round, as the services worker does; it runs when the store is back.
"""
from __future__ import annotations

import logging

from mailserver.errors import CivicmailError
from mailserver.store.outage import is_outage

from .reasons import hidden_reason


def store_unavailable(exc: BaseException) -> bool:
    """Is this the store being away (every drop would fail alike), not a fault of one drop? Also
    when it is the cause of the error raised (``raise StorageError(...) from exc``). The same test
    as the servers' (store/outage.py), so a drop and a client see one notion of an outage."""
    return is_outage(exc) or (exc.__cause__ is not None and is_outage(exc.__cause__))


def set_aside_reason(log: logging.Logger, what: str, exc: BaseException) -> str:
    """Log why ``what`` was set aside and return the reason the agency or the spool note gets.
    An error civicmail raised on purpose (a bad file) is a warning; anything else is a fault to
    look into, logged with its traceback."""
    reason = hidden_reason(exc)
    if isinstance(exc, CivicmailError):
        log.warning("%s set aside: %s", what, reason)
    else:
        log.error("%s set aside after an internal error", what, exc_info=exc)
    return reason

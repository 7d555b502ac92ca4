"""NOTIFY (RFC 5465): NOTIFY SET replaces what the session is told, NOTIFY NONE ends it
(``notify.Notifier`` does the telling)."""
from __future__ import annotations

from . import responses as R
from .notify import MAX_NAMES, SUPPORTED, Notifier
from .notify_syntax import Notify, parse_notify
from .registry import AUTHED, command
from .responses import Reply
from .session import ImapSession

_SUPPORTED = frozenset(SUPPORTED)


@command("NOTIFY", AUTHED, parse_notify, cap="NOTIFY", expunge=True)
async def do_notify(s: ImapSession, cmd: Notify) -> Reply:
    if cmd.unsupported(_SUPPORTED):
        # RFC 5465 3.1: NO, with every event this server supports; what was in effect stays
        return R.NO_BADEVENT.with_code(f"BADEVENT ({' '.join(SUPPORTED)})")
    if sum(len(g.mailboxes) for g in cmd.groups) > MAX_NAMES:
        return R.NO_NOTIFY_TOO_MANY
    s.stop_notify()
    s.pending = True  # RFC 5465 3.1: NOTIFY SET (and NONE) imply a NOOP
    if cmd.none:
        return R.OK_DONE
    notifier = Notifier(s, cmd)
    s.start_notify(notifier)
    await notifier.start(cmd.status)
    return R.OK_DONE

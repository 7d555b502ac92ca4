"""RFC 5464 METADATA: GETMETADATA and SETMETADATA, on the server (mailbox "") and on the user's
folders, advertised as METADATA (server and mailbox entries both). "/private" and "/shared"
entries are both the account's own: there are no shared mailboxes here, so no other user sees
either, and [METADATA NOPRIVATE] is never needed."""
from __future__ import annotations

import re

from ..store import annotations as an
from . import parser as P
from . import responses as R
from .codec import astring
from .commands import GetMetadata, SetMetadata
from .registry import AUTHED, command
from .responses import Reply
from .session import ImapSession


#: an entry name that can go as an atom, as RFC 5464's examples send them
_ATOM = re.compile(r'[!#$&\'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+\Z')


def _entry(name: str) -> bytes:
    return name.encode("ascii") if _ATOM.match(name) else astring(name)


def _value(data: bytes | None, utf8: bool) -> bytes:
    """A value as RFC 5464 5 sends it: NIL, a string or literal, or a literal8 when it holds NUL."""
    if data is not None and b"\0" in data:
        return b"~{%d}\r\n" % len(data) + data
    return astring(data, utf8)


@command("GETMETADATA", AUTHED, P.getmetadata, cap="METADATA", expunge=True)
async def do_getmetadata(s: ImapSession, cmd: GetMetadata) -> Reply:
    """RFC 5464 4.2: one METADATA response with every entry asked for; values past MAXSIZE are
    left out and the tagged OK says the longest ([METADATA LONGENTRIES n]). The values read are
    bounded by imap.metadata_max_entries x metadata_max_size; the client chooses how many, so
    the heavy lane reads them."""
    found = await s.heavy(an.get_metadata, s.ctx.store, s.account_id, cmd.mailbox, cmd.entries, cmd.depth, cmd.maxsize)
    if found.entries:
        pairs = b" ".join(_entry(name) + b" " + _value(value, s.utf8) for name, value in found.entries)
        await s.send(b"* METADATA " + s.mailbox_wire(cmd.mailbox).encode("utf-8") + b" (" + pairs + b")\r\n")
    if found.longest_omitted:
        return R.OK_METADATA_LONGENTRIES.with_code(f"METADATA LONGENTRIES {found.longest_omitted}")
    return R.OK_DONE


@command("SETMETADATA", AUTHED, P.setmetadata, expunge=True)
async def do_setmetadata(s: ImapSession, cmd: SetMetadata) -> Reply:
    """RFC 5464 4.3: all entries or none; NO [METADATA MAXSIZE n] or [METADATA TOOMANY] past
    imap.metadata_max_size or metadata_max_entries."""
    imap = s.config.imap
    await s.ctx.run(an.set_metadata, s.ctx.store, s.account_id, cmd.mailbox, cmd.items, imap.metadata_max_size,
                    imap.metadata_max_entries)
    return R.OK_DONE

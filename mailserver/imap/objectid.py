"""RFC 8474 object identifiers: MAILBOXID and EMAILID (THREADID is NIL: threads are not stored).

An objectid is 1 to 255 of ALPHA, DIGIT, "_" and "-". Neither kind may ever name two different
things, while the store may reuse a row id after the row with the largest id is deleted (SQLite
picks max(id) + 1): so each id is the row id with something that tells its row apart from any
later row that takes the same id.

* MAILBOXID: "F", the folder row's id and its UIDVALIDITY. Both survive RENAME; a deleted and
  recreated folder has a new UIDVALIDITY (the account never reuses one), hence a new id.
* EMAILID: "M", the content row's id and a digest of what was cached of that content at delivery
  (its ENVELOPE and size). Content is stored once per message, and COPY and MOVE point at the
  same row, so the id is the same in every folder the message is in (RFC 8474 5.1).
"""
from __future__ import annotations

import hashlib


def mailbox_id(folder_id: int, uidvalidity: int) -> str:
    return f"F{folder_id}-{uidvalidity}"


def email_id(content_id: int, envelope: str | None, size: int) -> str:
    digest = hashlib.blake2s(f"{size} {envelope or ''}".encode("utf-8", "replace"), digest_size=6).hexdigest()
    return f"M{content_id}-{digest}"

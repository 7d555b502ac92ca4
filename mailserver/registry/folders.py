"""The folders every account has (INBOX and the SPECIAL-USE set), created with the account."""
from __future__ import annotations

import time
from typing import Iterable

from sqlalchemy.orm import Session

from ..store.models import Folder, MailboxSubscription, utcnow
from ..store.models.mail import DEFAULT_FOLDERS


def new_uidvalidity() -> int:
    # Seconds since the epoch fit in 32 bits until 2106 and grow between recreations.
    return int(time.time()) & 0xFFFFFFFF


def create_default_folders(session: Session, account_ids: Iterable[int]) -> None:
    """INBOX and the special-use folders, subscribed (clients expect to find them in LSUB, and
    Dovecot's default configuration subscribes them too)."""
    uidvalidity = new_uidvalidity()
    now = utcnow()
    account_ids = list(account_ids)
    rows = [
        {"account_id": aid, "name": name, "special_use": use, "uidvalidity": uidvalidity,
         "uidnext": 1, "highestmodseq": 1, "total_size": 0, "message_count": 0, "created_at": now}
        for aid in account_ids
        for name, use in DEFAULT_FOLDERS
    ]
    if rows:
        # Core executemany: one prepared statement for the whole batch (bulk import makes millions)
        session.execute(Folder.__table__.insert(), rows)
        session.execute(MailboxSubscription.__table__.insert(),
                        [{"account_id": aid, "name": name} for aid in account_ids for name, _ in DEFAULT_FOLDERS])

"""What handling one service message produced: an outcome word (recorded) and the mail to store."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Handled:
    #: recorded in service_processed.outcome (subscribed, vote, vote-rejected, ignored-unverified...)
    outcome: str
    #: (account id, EmailMessage or raw bytes) to store in that account's INBOX, or with a folder third
    mail: list[tuple] = field(default_factory=list)

"""One drop row on its way through the stages, and the states it can end in."""
from __future__ import annotations

from dataclasses import dataclass, field

from mailserver.mime import Analyzed

from .reasons import hide_numbers

RECEIVED, INVALID, UNMATCHED, HELD, OPTED_OUT = "received", "invalid", "unmatched", "held", "opted-out"
DELIVERED, DUPLICATE, FAILED = "delivered", "duplicate", "failed"
STATUSES = (RECEIVED, INVALID, UNMATCHED, HELD, OPTED_OUT, DELIVERED, DUPLICATE, FAILED)
#: rows whose original data is kept (sealed) for the report and `drop retry`
KEEP_DATA = (INVALID, UNMATCHED, HELD, OPTED_OUT, FAILED)
#: rows `drop retry` runs again
RETRYABLE = (HELD, FAILED, UNMATCHED)


@dataclass
class RowState:
    line: int
    #: {column as the agency wrote it: cell text}
    cells: dict[str, str]
    status: str = RECEIVED
    stage: str | None = None
    reason: str | None = None
    values: dict = field(default_factory=dict)
    id_index: bytes = b""
    key: str | None = None
    account_id: int | None = None
    address: str | None = None
    citizen_name: str | None = None
    #: subject, text and HTML between render and compose (a render.Rendered), then the composed
    #: notice until sign (a structure.ComposedNotice)
    rendered: object | None = None
    #: the agency's S/MIME signature of the composed notice (a sign.SignedNotice) between sign and
    #: structure; None where the agency has no certificate
    signed: object | None = None
    raw: bytes | None = None
    analyzed: Analyzed | None = None
    #: (subject, text) for the paper-mail fallback of an unmatched row
    paper: tuple[str, str] | None = None
    #: set on `drop retry`: the stored row to update, and its status before this run
    row_id: int | None = None
    previous: str | None = None

    def stop(self, status: str, stage: str, reason: str) -> None:
        """The row ends here. Its reason never carries an ID number, whatever cell it quotes."""
        self.status, self.stage, self.reason = status, stage, hide_numbers(reason)

    @property
    def ready(self) -> bool:
        return self.status == RECEIVED and self.raw is not None

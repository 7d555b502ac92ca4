"""Stage `consent`: mandatory notices always go; optional statements only to citizens who
have not opted out (``civicmail notice opt-out``; opting out by mail is the citizen-services part)."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mailserver.store.models import NoticeOptOut

from . import reasons
from .rowstate import OPTED_OUT, RowState


def consent(ctx, rows: list[RowState]) -> None:
    if ctx.definition.mandatory or not rows:
        return
    ids = [r.account_id for r in rows]
    out: set[int] = set()
    with ctx.store.reader() as s:
        for i in range(0, len(ids), 900):
            out.update(s.scalars(select(NoticeOptOut.account_id).where(
                NoticeOptOut.notice_type_id == ctx.definition.id, NoticeOptOut.account_id.in_(ids[i:i + 900]))))
    for r in rows:
        if r.account_id in out:
            r.stop(OPTED_OUT, "consent", reasons.OPTED_OUT)


def set_opt_out(store, account_id: int, notice_type: str, opted_out: bool) -> None:
    with store.session() as s:
        if opted_out:
            ins = pg_insert if store.dialect == "postgresql" else sqlite_insert
            s.execute(ins(NoticeOptOut).values(account_id=account_id, notice_type_id=notice_type)
                      .on_conflict_do_nothing())
        else:
            s.execute(delete(NoticeOptOut).where(NoticeOptOut.account_id == account_id,
                                                 NoticeOptOut.notice_type_id == notice_type))

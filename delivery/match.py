"""Stage `match`: ID number -> the citizen's account, in batches through the keyed index.

No account, or a disabled one: unmatched (the paper-mail fallback gets the row). An account
whose registered name differs from the row's: held, since a wrong name means a wrong match.
"""
from __future__ import annotations

from sqlalchemy import select

from mailserver.store.models import Account, Citizen

from .reasons import DISABLED, NAME_DIFFERS, NO_ACCOUNT
from .rowstate import HELD, UNMATCHED, RowState

LOOKUP_CHUNK = 900  # below SQLite's bound-parameter limit


def match(ctx, rows: list[RowState]) -> None:
    found: dict[bytes, tuple] = {}
    with ctx.store.reader() as s:
        for i in range(0, len(rows), LOOKUP_CHUNK):
            chunk = [r.id_index for r in rows[i:i + LOOKUP_CHUNK]]
            q = (select(Citizen.id_index, Citizen.name, Account.id, Account.address, Account.state)
                 .join(Account, Account.citizen_id == Citizen.id).where(Citizen.id_index.in_(chunk)))
            for index, name, account_id, address, state in s.execute(q):
                found[bytes(index)] = (name, account_id, address, state)
    for r in rows:
        hit = found.get(r.id_index)
        if hit is None:
            r.stop(UNMATCHED, "match", NO_ACCOUNT)
            continue
        name, account_id, address, state = hit
        if state == "disabled":
            r.stop(UNMATCHED, "match", DISABLED)
        elif name.strip() != (r.values.get("name") or "").strip():
            r.stop(HELD, "match", NAME_DIFFERS)
        else:
            r.account_id, r.address, r.citizen_name = account_id, address, name

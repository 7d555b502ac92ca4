"""Stage `match`: ID number -> the citizen's account, in batches through the keyed index.

No account, or a disabled one: unmatched (the paper-mail fallback gets the row). An account
whose registered name differs from the row's: held, since a wrong name means a wrong match.
"""
from __future__ import annotations

from mailserver.store.driver import driver_rows

from .reasons import DISABLED, NAME_DIFFERS, NO_ACCOUNT
from .rowstate import HELD, UNMATCHED, RowState

LOOKUP_CHUNK = 900  # below SQLite's bound-parameter limit


def match(ctx, rows: list[RowState]) -> None:
    found: dict[bytes, tuple] = {}
    with ctx.store.reader() as s:
        for i in range(0, len(rows), LOOKUP_CHUNK):
            chunk = [r.id_index for r in rows[i:i + LOOKUP_CHUNK]]
            # through the driver: SQLAlchemy's processing of each bound value and result row cost
            # more than the index lookups
            for index, name, account_id, address, state in driver_rows(
                    s, "SELECT citizen.id_index, citizen.name, account.id, account.address, account.state "
                       "FROM citizen JOIN account ON account.citizen_id = citizen.id "
                       f"WHERE citizen.id_index IN ({', '.join('?' * len(chunk))})", *chunk):
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

"""What identifies a row without revealing it: the idempotency key.

The key is (agency, notice type, the agency's reference) or, without a reference, (agency,
notice type, the ID number's keyed hash, a hash of the row's values): never the clear number.
The rows kept for the report are sealed by ``mailserver.identity.rowseal``.
"""
from __future__ import annotations

import hashlib

KEY_HEX = 32


def idempotency_key(agency: str, notice_type: str, values: dict, id_index: bytes, field_names: tuple[str, ...]) -> str:
    reference = values.get("reference")
    if reference:
        basis = f"{agency}\0{notice_type}\0ref\0{reference}"
    else:
        # The typed values, so that 2026/01/02 and 2026-01-02 are the same row.
        row = "\0".join(f"{n}={'' if values.get(n) is None else values[n]}" for n in field_names)
        row_hash = hashlib.sha256(row.encode("utf-8")).hexdigest()
        basis = f"{agency}\0{notice_type}\0row\0{id_index.hex()}\0{row_hash}"
    # 128 bits: no collision in any city's lifetime, and half the unique index of a full digest
    # (its pages are what a large drop's writer keeps in cache).
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:KEY_HEX]

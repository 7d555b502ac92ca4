"""What identifies a row without revealing it: the idempotency key, and the sealed row data.

The key is (agency, notice type, the agency's reference) or, without a reference, (agency,
notice type, the ID number's keyed hash, a hash of the row's values): never the clear number.
Rows kept for the report and ``drop retry`` hold ID numbers, so they are sealed with the
ID-number key (AES-GCM, key version first, as ``IdKeyring.encrypt`` does for numbers).
"""
from __future__ import annotations

import hashlib
import json
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailserver.identity.keys import IdKeyring

ROW_AAD = b"civicmail drop row"
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


def seal_row(ring: IdKeyring, cells: dict[str, str]) -> bytes:
    version = ring.current.to_bytes(2, "big")
    nonce = secrets.token_bytes(12)
    data = json.dumps(cells, ensure_ascii=False).encode("utf-8")
    return version + nonce + AESGCM(ring.enc_keys[ring.current]).encrypt(nonce, data, version + ROW_AAD)


def unseal_row(ring: IdKeyring, blob: bytes) -> dict[str, str]:
    version, nonce, body = blob[:2], blob[2:14], blob[14:]
    key = ring.enc_keys[int.from_bytes(version, "big")]
    return json.loads(AESGCM(key).decrypt(nonce, body, version + ROW_AAD).decode("utf-8"))

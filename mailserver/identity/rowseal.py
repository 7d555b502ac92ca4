"""Sealed drop rows: rows kept for a drop's report and ``drop retry`` hold ID numbers, so they are
sealed with the ID-number key (AES-GCM, key version first, as ``IdKeyring.encrypt`` does for
numbers). Here beside the keyring, so that key rotation (``registry.keys``) reseals them without
importing the pipeline.
"""
from __future__ import annotations

import json
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keys import IdKeyring

ROW_AAD = b"civicmail drop row"


def seal_row(ring: IdKeyring, cells: dict[str, str]) -> bytes:
    version = ring.current.to_bytes(2, "big")
    nonce = secrets.token_bytes(12)
    data = json.dumps(cells, ensure_ascii=False).encode("utf-8")
    return version + nonce + AESGCM(ring.enc_keys[ring.current]).encrypt(nonce, data, version + ROW_AAD)


def unseal_row(ring: IdKeyring, blob: bytes) -> dict[str, str]:
    version, nonce, body = blob[:2], blob[2:14], blob[14:]
    key = ring.enc_keys[int.from_bytes(version, "big")]
    return json.loads(AESGCM(key).decrypt(nonce, body, version + ROW_AAD).decode("utf-8"))

"""Receipts: the agency store's signed statement that it holds a verified copy (R9).

A device deletes nothing before it holds a receipt that verifies with the agency key and
names exactly the blob, its size and the manifest entry that sealed it.

Example::

    r = make_receipt(agency_key, device="bwc-1", sha256=h, size=n, entry_seq=17,
                     entry_hash=e.hash, session=sid, stored_at=now, store="store-1")
    check_receipt(r, agency_key.verify_key, device="bwc-1", sha256=h)
"""

from __future__ import annotations

from typing import Any

import nacl.signing

from evidence import signed
from evidence.seal import key_id


class ReceiptError(ValueError):
    pass


def make_receipt(
    agency_key: nacl.signing.SigningKey,
    *,
    device: str,
    sha256: str,
    size: int,
    entry_seq: int,
    entry_hash: str,
    session: str | None,
    stored_at: float,
    store: str,
) -> bytes:
    payload = {
        "type": "receipt",
        "v": 1,
        "agency": key_id(agency_key.verify_key),
        "device": device,
        "sha256": sha256,
        "size": size,
        "entry_seq": entry_seq,
        "entry_hash": entry_hash,
        "session": session,
        "stored_at": stored_at,
        "store": store,
    }
    return signed.sign(agency_key, payload)


def check_receipt(
    data: bytes, agency_key: nacl.signing.VerifyKey, *, device: str, sha256: str | None = None
) -> dict[str, Any]:
    """The receipt's payload if it is the agency's and about this device (and blob)."""
    try:
        payload, sig = signed.parse(data, "receipt")
        signed.verify(
            payload, sig, agency_key, "receipt signature does not verify with the agency key"
        )
    except signed.SignedError as e:
        raise ReceiptError(str(e)) from None
    if payload.get("type") != "receipt":
        raise ReceiptError("not a receipt")
    if payload.get("device") != device:
        raise ReceiptError(f"receipt is for device {payload.get('device')!r}, not {device!r}")
    if sha256 is not None and payload.get("sha256") != sha256:
        raise ReceiptError("receipt names another blob")
    return payload

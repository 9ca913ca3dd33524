"""Receipts: the agency store's signed statement that it holds a verified copy (R9).

A device deletes nothing before it holds a receipt that verifies with the agency key and
names exactly the blob, its size and the manifest entry that sealed it.

A store signs receipts with a key of its own, which the agency certifies for receipts
only (:func:`certify_receipt_key`): the key on a store host can sign receipts and nothing
else — not commands, not bundles. The certificate travels inside each receipt, so a
device checks it with the agency key it already trusts.

Example::

    cert = certify_receipt_key(agency_key, "store-1", store_key.verify_key, now)
    r = make_receipt(store_key, device="bwc-1", sha256=h, size=n, entry_seq=17,
                     entry_hash=e.hash, session=sid, stored_at=now, store="store-1",
                     certificate=cert)
    check_receipt(r, agency_key.verify_key, device="bwc-1", sha256=h)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import nacl.signing

from evidence import signed
from evidence.seal import canonical, key_id

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SEQ = 2**53  # a sequence number beyond this is not one a device sealed
MAX_SIZE = 2**40  # bytes: no segment is a terabyte


class ReceiptError(ValueError):
    pass


@dataclass(frozen=True)
class ReceiptClaim:
    """What a receipt says is stored: the fields a device checks against its own journal."""

    sha256: str
    size: int
    entry_seq: int
    entry_hash: str

    @staticmethod
    def of(payload: dict[str, Any]) -> ReceiptClaim:
        """The claim of a receipt's payload; ReceiptError naming the first bad field."""
        for name in ("sha256", "entry_hash"):
            v = payload.get(name)
            if not isinstance(v, str) or not _HEX64.fullmatch(v):
                raise ReceiptError(f"receipt {name} is not 64 lowercase hex digits")
        for name, high in (("size", MAX_SIZE), ("entry_seq", MAX_SEQ)):
            v = payload.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= high:
                raise ReceiptError(f"receipt {name} is not an integer in [1, {high}]")
        return ReceiptClaim(
            payload["sha256"], payload["size"], payload["entry_seq"], payload["entry_hash"]
        )


RECEIPT_KEY = "receipt_key"  # the type of the agency's certificate for a store's key


def certify_receipt_key(
    agency_key: nacl.signing.SigningKey, store: str, key: nacl.signing.VerifyKey, now: float
) -> bytes:
    """The agency's statement that ``key`` signs ``store``'s receipts (and nothing else)."""
    payload = {
        "type": RECEIPT_KEY,
        "v": 1,
        "agency": key_id(agency_key.verify_key),
        "store": store,
        "key": bytes(key).hex(),
        "issued": now,
    }
    return signed.sign(agency_key, payload)


def make_receipt(
    signing_key: nacl.signing.SigningKey,
    *,
    device: str,
    sha256: str,
    size: int,
    entry_seq: int,
    entry_hash: str,
    session: str | None,
    stored_at: float,
    store: str,
    certificate: bytes | None = None,
) -> bytes:
    """A receipt signed by the agency key itself, or (``certificate``) by a store's
    receipt key the agency certified."""
    payload: dict[str, Any] = {
        "type": "receipt",
        "v": 1,
        "agency": key_id(signing_key.verify_key),
        "device": device,
        "sha256": sha256,
        "size": size,
        "entry_seq": entry_seq,
        "entry_hash": entry_hash,
        "session": session,
        "stored_at": stored_at,
        "store": store,
    }
    return signed.sign(signing_key, with_certificate(payload, certificate))


def with_certificate(payload: dict[str, Any], certificate: bytes | None) -> dict[str, Any]:
    """A store's statement carrying the agency's certificate for the key that signs it
    (None: the agency key signs it itself), as :func:`certified_signer` checks it."""
    if certificate is not None:
        cert = json.loads(certificate)
        payload = {**payload, "agency": cert["payload"]["agency"], "certificate": cert}
    return payload


def check_receipt(
    data: bytes, agency_key: nacl.signing.VerifyKey, *, device: str, sha256: str | None = None
) -> dict[str, Any]:
    """The receipt's payload if it is the agency's, about this device (and blob), and its
    hashes and numbers are well-formed (:class:`ReceiptClaim`)."""
    try:
        payload, sig = signed.parse(data, "receipt")
        key = certified_signer(payload, agency_key)
        signed.verify(payload, sig, key, "receipt signature does not verify with the agency key")
    except signed.SignedError as e:
        raise ReceiptError(str(e)) from None
    if payload.get("type") != "receipt":
        raise ReceiptError("not a receipt")
    if payload.get("device") != device:
        raise ReceiptError(f"receipt is for device {payload.get('device')!r}, not {device!r}")
    claim = ReceiptClaim.of(payload)
    if sha256 is not None and claim.sha256 != sha256:
        raise ReceiptError("receipt names another blob")
    return payload


_CERTIFIED: set[tuple[bytes, bytes]] = set()  # (certificate, agency key) verified


def certified_signer(
    payload: dict[str, Any], agency_key: nacl.signing.VerifyKey
) -> nacl.signing.VerifyKey:
    """The key a store's signed statement (a receipt, an ack) must verify with: the
    agency's, or the store key its embedded certificate names, if the agency signed that
    certificate for this store."""
    cert = payload.get("certificate")
    if cert is None:
        return agency_key
    try:
        text = canonical(cert)
        cp, csig = signed.parse(text, "receipt key certificate")
    except (TypeError, ValueError) as e:
        raise signed.SignedError(f"receipt key certificate: {e}") from None
    # Every receipt from a store carries the same certificate: checked once per key.
    if (text, bytes(agency_key)) not in _CERTIFIED:
        signed.verify(cp, csig, agency_key, "receipt key certificate is not the agency's")
        _CERTIFIED.add((text, bytes(agency_key)))
    if cp.get("type") != RECEIPT_KEY:
        raise signed.SignedError("the receipt's certificate does not certify a receipt key")
    if cp.get("store") != payload.get("store"):
        raise signed.SignedError(
            f"receipt by {payload.get('store')!r} under a key certified for {cp.get('store')!r}"
        )
    return signed.parse_public_key(cp.get("key"), "receipt key")

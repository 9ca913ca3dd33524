"""Acknowledgements a device can trust: the store signs each ``ack`` with the receipt key
the agency certified (the certificate travels inside, as in a receipt), naming the
device, the entry's sequence number and hash.

An ack changes what the device does for good: an accepted entry is never sent again, a
refused one is marked so. Unsigned, anyone who can publish on the device's reply topic
could make it drop entries from its backlog; so a device acts on an ack only when it
verifies (:func:`open_ack`), and takes an unsigned one as advice: it waits a while before
sending the entry again, and drops nothing.

Example::

    data = sign_ack(store_key, ack, device="bwc-1", entry_hash=e.hash, store="store-1",
                    certificate=cert)
    opened = open_ack(data, agency_key.verify_key, device="bwc-1")
    opened.ack.ok, opened.entry_hash, opened.signed     # True, '3f…', True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import nacl.signing

from evidence import protocol as p
from evidence import signed
from evidence.messages import Ack
from evidence.receipt import certified_signer, with_certificate
from evidence.seal import key_id

TYPE = "ack"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class OpenedAck:
    """An ack as the device may act on it: ``signed`` by the agency or a store key the
    agency certified, for this device and the entry with ``entry_hash``; or unsigned
    (``signed`` False, ``entry_hash`` None): advice only."""

    ack: Ack
    entry_hash: str | None
    signed: bool


def sign_ack(
    key: nacl.signing.SigningKey,
    ack: Ack,
    *,
    device: str,
    entry_hash: str,
    store: str,
    certificate: bytes | None = None,
) -> bytes:
    """``ack`` of the entry with ``entry_hash``, signed by the store's receipt key (or,
    without a ``certificate``, by the agency key itself)."""
    payload: dict[str, Any] = {
        "type": TYPE,
        "v": 1,
        "agency": key_id(key.verify_key),
        "store": store,
        "device": device,
        "entry_hash": entry_hash,
        **ack.model_dump(),
    }
    return signed.sign(key, with_certificate(payload, certificate))


def open_ack(data: bytes, agency_key: nacl.signing.VerifyKey, *, device: str) -> OpenedAck:
    """The ack in ``data``: signed and checked, or plain (unsigned: advice). ProtocolError
    for one that is neither, or whose signature, certificate or device is not right."""
    try:
        payload, sig = signed.parse(data, "ack")
    except signed.SignedError:
        return OpenedAck(Ack.parse(data), None, signed=False)  # plain: advice only
    try:
        key = certified_signer(payload, agency_key)
        signed.verify(payload, sig, key, "ack signature does not verify with the agency key")
    except signed.SignedError as e:
        raise p.ProtocolError(str(e)) from None
    if payload.get("type") != TYPE or payload.get("device") != device:
        raise p.ProtocolError(f"a signed ack for device {payload.get('device')!r}, not {device!r}")
    entry_hash = payload.get("entry_hash")
    if not isinstance(entry_hash, str) or not _HEX64.fullmatch(entry_hash):
        raise p.ProtocolError("a signed ack's entry_hash is not 64 lowercase hex digits")
    fields = {k: payload[k] for k in Ack.model_fields if k in payload}
    return OpenedAck(Ack.parse(p.dumps(fields)), entry_hash, signed=True)

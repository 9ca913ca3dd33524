"""Signed documents: ``{"payload": {...}, "signature": base64}``, the signature by an
Ed25519 key over ``canonical(payload)`` (RFC 8785). Pure: bytes in, payload or error out.

The agency signs bundles and commands (and the store, receipts); a device signs its
enrolment and rotation requests. Agency documents name the agency key (``agency``: its key
id), are valid from ``issued`` to ``expires``, and commands name their target ``device``
and carry a random ``nonce`` so that the device can refuse a replay.

Example::

    doc = sign(agency_key, {"type": "command", "agency": key_id(agency_key.verify_key),
                            "device": "bwc-1", "issued": now, "expires": now + 3600, ...})
    payload = open_agency_doc(doc, agency_key.verify_key, kind="command", now=now,
                              device="bwc-1")
"""

from __future__ import annotations

import base64
import json
from typing import Any

import nacl.exceptions
import nacl.signing

from evidence import bounded_json
from evidence.names import SKEW_SECONDS, ProvisionError, iso
from evidence.seal import canonical, key_id

MAX_DOCUMENT = 256 * 1024  # bundles carry two certificates and settings: a few KiB


class SignedError(ProvisionError):
    """A signed document is malformed, forged, expired or not for us."""


def sign(key: nacl.signing.SigningKey, payload: dict[str, Any]) -> bytes:
    signature = key.sign(canonical(payload)).signature
    return canonical({"payload": payload, "signature": base64.b64encode(signature).decode()})


def parse(data: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """The payload and signature of a signed document; SignedError naming what is wrong."""
    if len(data) > MAX_DOCUMENT:
        raise SignedError(f"{what}: {len(data)} bytes, larger than {MAX_DOCUMENT}: not a {what}")
    try:
        doc = bounded_json.loads(data, what)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SignedError(f"{what} is not valid JSON (garbage or truncated: {e})") from None
    except bounded_json.BoundedJSONError as e:
        raise SignedError(str(e)) from None
    if not isinstance(doc, dict) or set(doc) != {"payload", "signature"}:
        raise SignedError(f"not a {what} (expected a signed document: payload and signature)")
    payload, sig = doc["payload"], doc["signature"]
    if not isinstance(payload, dict):
        raise SignedError(f"{what}: payload is not an object")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (ValueError, TypeError):
        raise SignedError(f"{what}: signature is not base64") from None
    if len(signature) != 64:
        raise SignedError(f"{what}: signature is not 64 bytes")
    return payload, signature


def verify(
    payload: dict[str, Any], signature: bytes, key: nacl.signing.VerifyKey, message: str
) -> None:
    try:
        key.verify(canonical(payload), signature)
    except nacl.exceptions.BadSignatureError:
        raise SignedError(message) from None


def parse_public_key(value: object, what: str) -> nacl.signing.VerifyKey:
    try:
        if not isinstance(value, str) or len(value) != 64:
            raise ValueError
        return nacl.signing.VerifyKey(bytes.fromhex(value))
    except (ValueError, nacl.exceptions.CryptoError):
        raise SignedError(f"{what} is not an Ed25519 public key (64 hex digits)") from None


def open_agency_doc(
    data: bytes,
    agency: nacl.signing.VerifyKey,
    *,
    kind: str,
    now: float,
    device: str | None = None,
) -> dict[str, Any]:
    """The payload of an agency document of type ``kind``, checked: the agency key, the
    signature, the validity window, and (when given) the target device."""
    payload, signature = parse(data, kind)
    if payload.get("type") != kind:
        raise SignedError(f"not a {kind} (type {payload.get('type')!r})")
    expected = key_id(agency)
    if payload.get("agency") != expected:
        raise SignedError(
            f"{kind} is signed by another agency (key {payload.get('agency')!r}; "
            f"this device trusts {expected})"
        )
    verify(
        payload,
        signature,
        agency,
        f"{kind} signature does not verify with the agency key (tampered or forged)",
    )
    check_window(payload, now, kind)
    if device is not None and payload.get("device", payload.get("device_id")) != device:
        target = payload.get("device", payload.get("device_id"))
        raise SignedError(f"{kind} is for device {target!r}, this device is {device!r}")
    return payload


def check_window(payload: dict[str, Any], now: float, what: str) -> None:
    issued, expires = payload.get("issued"), payload.get("expires")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise SignedError(f"{what}: issued and expires must be numbers")
    if isinstance(issued, bool) or isinstance(expires, bool) or expires <= issued:
        raise SignedError(f"{what}: expires must come after issued")
    if issued > now + SKEW_SECONDS:
        raise SignedError(
            f"{what} is issued in the future ({iso(issued)}; now {iso(now)}): check the clock"
        )
    if now >= expires:
        raise SignedError(f"{what} expired at {iso(expires)} (now {iso(now)})")

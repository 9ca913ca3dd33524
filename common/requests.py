"""Requests a device sends the agency: enrolment (``agent keygen``) and key rotation
(``agent rotate-key``). Both are signed by the device key; pure code, no I/O.

An enrolment request proves possession of the device's Ed25519 key (it is signed by it)
and of its TLS key (the CSR is signed by that). A rotation request is signed by the old
key, carries the chain's ``key_rotation`` entry (also signed by the old key) and a proof by
the new key.

Example::

    data = make_request(device_key, tls_key, Identity("bwc-1"), serial="S1", now=now)
    req = check_request(data, now)           # ProvisionError naming the problem
    req.payload.device_id, req.verify_key, req.csr
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

import nacl.signing
from cryptography import x509
from pydantic import Field

from common import pki
from common.identity import Identity
from evidence import signed
from evidence.body_fields import ManifestError
from evidence.entries import KeyRotation
from evidence.models import Strict, validate
from evidence.names import SKEW_SECONDS, ProvisionError, check_device_id, iso
from evidence.seal import Entry, SealError, canonical, check_signature, key_id

Role = Literal["body_recorder", "room_controller"]
_TEXT = r"^[\x21-\x7e][\x20-\x7e]{0,63}$"  # printable ASCII, no leading space


class EnrolmentRequest(Strict):
    type: Literal["enrolment_request"]
    v: Literal[1]
    device_id: str
    serial: str = Field(pattern=_TEXT)
    model: str = Field(pattern=_TEXT)
    role: Role
    public_key: str
    csr: str
    created: float


@dataclass(frozen=True)
class Enrolment:
    payload: EnrolmentRequest
    verify_key: nacl.signing.VerifyKey
    csr: x509.CertificateSigningRequest
    sha256: str


def make_request(
    device_key: nacl.signing.SigningKey,
    tls_key: pki.PrivateKey,
    identity: Identity,
    serial: str,
    now: float,
) -> bytes:
    payload = {
        "type": "enrolment_request",
        "v": 1,
        "device_id": identity.device_id,
        "serial": serial,
        "model": identity.model,
        "role": identity.role,
        "public_key": bytes(device_key.verify_key).hex(),
        "csr": pki.make_csr(tls_key, identity.device_id).decode(),
        "created": now,
    }
    validate(EnrolmentRequest, payload, "enrolment request")  # refuse to write a bad one
    check_device_id(identity.device_id)
    return signed.sign(device_key, payload)


def check_request(data: bytes, now: float) -> Enrolment:
    raw, signature = signed.parse(data, "enrolment request")
    if raw.get("type") != "enrolment_request":
        raise ProvisionError(f"not an enrolment request (type {raw.get('type')!r})")
    req = validate(EnrolmentRequest, raw, "enrolment request")
    check_device_id(req.device_id)
    key = signed.parse_public_key(req.public_key, "enrolment request public_key")
    signed.verify(
        raw,
        signature,
        key,
        "enrolment request signature does not verify with its public key (altered after keygen)",
    )
    if req.created > now + SKEW_SECONDS:
        raise ProvisionError(f"enrolment request is dated in the future ({iso(req.created)})")
    try:
        csr = pki.parse_csr(req.csr)
    except ProvisionError as e:
        raise ProvisionError(f"enrolment request: {e}") from None
    if pki.common_name(csr.subject) != req.device_id:
        raise ProvisionError(
            f"enrolment request: CSR subject {pki.common_name(csr.subject)!r} is not the "
            f"device id {req.device_id!r}"
        )
    return Enrolment(req, key, csr, hashlib.sha256(data).hexdigest())


class RotationRequest(Strict):
    type: Literal["rotation_request"]
    v: Literal[1]
    device_id: str
    old_key: str
    new_key: str
    entry: dict[str, object]
    proof: str
    created: float


@dataclass(frozen=True)
class Rotation:
    device_id: str
    old_key: nacl.signing.VerifyKey
    new_key: nacl.signing.VerifyKey
    rotated_at: float  # the rotation entry's wall time
    entry: Entry


def make_rotation_request(
    old_key: nacl.signing.SigningKey,
    new_key: nacl.signing.SigningKey,
    entry: Entry,
    now: float,
) -> bytes:
    payload = {
        "type": "rotation_request",
        "v": 1,
        "device_id": entry.payload["device"],
        "old_key": bytes(old_key.verify_key).hex(),
        "new_key": bytes(new_key.verify_key).hex(),
        "entry": {
            "payload": entry.payload,
            "signature": base64.b64encode(entry.signature).decode(),
        },
        "proof": base64.b64encode(new_key.sign(canonical(entry.payload)).signature).decode(),
        "created": now,
    }
    return signed.sign(old_key, payload)


def check_rotation_request(data: bytes) -> Rotation:
    raw, signature = signed.parse(data, "rotation request")
    if raw.get("type") != "rotation_request":
        raise ProvisionError(f"not a rotation request (type {raw.get('type')!r})")
    req = validate(RotationRequest, raw, "rotation request")
    old = signed.parse_public_key(req.old_key, "rotation request old_key")
    new = signed.parse_public_key(req.new_key, "rotation request new_key")
    signed.verify(raw, signature, old, "rotation request is not signed by the old key")
    try:
        entry = Entry.from_json(canonical(req.entry))
        check_signature(entry, old)
    except SealError as e:
        raise ProvisionError(f"rotation request: its chain entry is not valid: {e}") from None
    try:
        rotated = KeyRotation.from_body(entry.body) if entry.kind == KeyRotation.KIND else None
    except ManifestError as e:
        raise ProvisionError(f"rotation request: its chain entry does not read: {e}") from None
    if (
        rotated is None
        or entry.payload["device"] != req.device_id
        or entry.payload["key"] != key_id(old)
        or rotated.new_key != req.new_key
    ):
        raise ProvisionError(
            "rotation request: its chain entry is not this device's rotation from the old key "
            "to the new one"
        )
    try:
        proof = base64.b64decode(req.proof, validate=True)
    except ValueError:
        raise ProvisionError("rotation request: proof is not base64") from None
    signed.verify(
        entry.payload, proof, new, "rotation request: the new key's proof does not verify"
    )
    return Rotation(req.device_id, old, new, float(entry.payload["at"]["wall"]), entry)

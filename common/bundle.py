"""The provisioning bundle: what the agency gives one device, signed by the agency key.

It carries the device id, the broker address, the CA and the device's client certificate,
the agency public key and the recording settings, and names the device key it is for.
``check_bundle`` is everything ``agent install`` verifies before it writes a byte.

Example::

    data = make_bundle(agency_key, device=facts_from_request, broker=Broker(host=..., port=...),
                       ca=ca_cert, client=client_cert, settings={}, now=now, days=7)
    bundle = check_bundle(data, DeviceFacts("bwc-1", "body_recorder", pub_hex, tls_pub),
                          now=now, pinned=None)
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from typing import Any, Literal

import nacl.signing
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, ValidationError

from common import pki
from common.requests import Role
from common.settings import DeviceConfig
from evidence import signed
from evidence.models import Strict, describe, validate
from evidence.names import ProvisionError
from evidence.seal import key_id


class Broker(Strict):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


class BundlePayload(Strict):
    type: Literal["bundle"]
    v: Literal[1]
    agency: str
    device_id: str
    role: Role
    model: str
    serial: str
    broker: Broker
    ca_cert: str
    client_cert: str
    agency_public_key: str
    # the agency's X25519 key the device encrypts its footage to (bundles before it: None)
    evidence_public_key: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    device_public_key: str
    settings: dict[str, Any]
    issued: float
    expires: float


@dataclass(frozen=True)
class DeviceFacts:
    """What the device knows of itself, to check a bundle is for it."""

    device_id: str
    role: str
    public_key: str  # hex, from DATA/device.pub
    tls_public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Bundle:
    payload: BundlePayload
    agency_key: nacl.signing.VerifyKey
    ca: x509.Certificate
    client: x509.Certificate
    sha256: str


def check_settings(
    settings: dict[str, Any], what: str = "settings", role: str | None = None
) -> DeviceConfig:
    """Settings must be a valid device.toml, and survive the trip through TOML; a
    ``[room]`` section only for a room controller (``role``), as the device checks at start."""
    if role is not None and role != "room_controller" and "room" in settings:
        raise ProvisionError(
            f"{what} hold a [room] section, but the device enrolled as a {role}: a room "
            "controller is keygen'd with --role room_controller"
        )
    try:
        config = DeviceConfig.model_validate(settings)
        round_trip = tomllib.loads(tomli_w.dumps(settings))
    except ValidationError as e:
        raise ProvisionError(
            f"{what} are not a valid device configuration: {describe(e)}"
        ) from None
    except (TypeError, ValueError) as e:
        raise ProvisionError(f"{what} cannot be written as TOML: {e}") from None
    if round_trip != settings:
        raise ProvisionError(f"{what} do not survive a TOML round trip")
    return config


def make_bundle(
    agency_key: nacl.signing.SigningKey,
    *,
    device_id: str,
    role: str,
    model: str,
    serial: str,
    device_public_key: str,
    broker: Broker,
    ca: x509.Certificate,
    client: x509.Certificate,
    settings: dict[str, Any],
    now: float,
    days: float,
    evidence_public_key: str | None = None,
) -> bytes:
    payload = {
        "type": "bundle",
        "v": 1,
        "agency": key_id(agency_key.verify_key),
        "device_id": device_id,
        "role": role,
        "model": model,
        "serial": serial,
        "broker": broker.model_dump(),
        "ca_cert": pki.cert_pem(ca).decode(),
        "client_cert": pki.cert_pem(client).decode(),
        "agency_public_key": bytes(agency_key.verify_key).hex(),
        "device_public_key": device_public_key,
        **({"evidence_public_key": evidence_public_key} if evidence_public_key else {}),
        "settings": settings,
        "issued": now,
        "expires": now + days * 86400,
    }
    validate(BundlePayload, payload, "bundle")
    return signed.sign(agency_key, payload)


def check_bundle(
    data: bytes, device: DeviceFacts, now: float, pinned: nacl.signing.VerifyKey | None
) -> Bundle:
    """Every check ``agent install`` makes, in the order that gives the clearest reason.

    ``pinned`` is the agency key the device already trusts (from an earlier install, or
    given at install time); None trusts the key the bundle carries (first use)."""
    raw, _ = signed.parse(data, "bundle")
    if raw.get("type") != "bundle":
        raise ProvisionError(f"not a bundle (type {raw.get('type')!r})")
    carried = signed.parse_public_key(raw.get("agency_public_key"), "bundle agency_public_key")
    if raw.get("agency") != key_id(carried):
        raise ProvisionError(
            f"bundle names agency key {raw.get('agency')!r} but carries key {key_id(carried)}"
        )
    if pinned is not None and bytes(pinned) != bytes(carried):
        raise ProvisionError(
            f"bundle is signed by another agency (key {key_id(carried)}; this device "
            f"trusts {key_id(pinned)})"
        )
    signed.open_agency_doc(data, carried, kind="bundle", now=now)
    b = validate(BundlePayload, raw, "bundle")
    if b.device_public_key != device.public_key:
        raise ProvisionError(
            f"bundle is for another device key ({b.device_public_key[:16]}…; this device's "
            f"key is {device.public_key[:16]}…)"
        )
    if b.device_id != device.device_id:
        raise ProvisionError(
            f"bundle is for device {b.device_id!r}, this device is {device.device_id!r}"
        )
    if b.role != device.role:
        raise ProvisionError(f"bundle is for a {b.role}, this device is a {device.role}")
    ca = pki.load_cert(b.ca_cert, "bundle ca_cert")
    client = pki.load_cert(b.client_cert, "bundle client_cert")
    pki.check_issued(client, ca, now, "client certificate")
    if pki.common_name(client.subject) != device.device_id:
        raise ProvisionError(
            f"client certificate is for {pki.common_name(client.subject)!r}, not "
            f"{device.device_id!r}"
        )
    if not pki.same_key(device.tls_public_key, client.public_key()):
        raise ProvisionError("client certificate is not for this device's TLS key")
    check_settings(b.settings, "bundle settings")
    return Bundle(b, carried, ca, client, hashlib.sha256(data).hexdigest())

"""Who this device is: its device id, role and model, kept in ``DATA/identity.json``.

The id is chosen once, when the device key is made (``unbroken agent keygen``, or the first
start of an unprovisioned device), and every chain entry names it. Provisioning registers
the device under this id and issues its TLS certificate with the id as subject.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import nacl.signing

from agent.evidence_dir import write_atomic

IDENTITY = "identity.json"
Role = Literal["body_recorder", "room_controller"]


@dataclass(frozen=True)
class Identity:
    device_id: str
    role: Role = "body_recorder"
    model: str = "unbroken-sim"


def default_device_id(key: nacl.signing.VerifyKey, role: Role = "body_recorder") -> str:
    prefix = "bwc" if role == "body_recorder" else "room"
    return f"{prefix}-{hashlib.sha256(bytes(key)).hexdigest()[:8]}"


def load_identity(root: Path) -> Identity | None:
    path = root / IDENTITY
    if not path.exists():
        return None
    try:
        return Identity(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a device identity file ({e})") from None


def save_identity(root: Path, identity: Identity) -> None:
    write_atomic(root / IDENTITY, json.dumps(asdict(identity), indent=2).encode() + b"\n")


def load_or_create_identity(root: Path, key: nacl.signing.VerifyKey) -> Identity:
    identity = load_identity(root)
    if identity is None:
        identity = Identity(default_device_id(key))
        save_identity(root, identity)
    return identity

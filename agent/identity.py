"""Who this device is: its device id, role and model, kept in ``DATA/identity.json``.

The id is chosen once, when the device key is made (``unbroken agent keygen``, or the first
start of an unprovisioned device), and every chain entry names it. Provisioning registers
the device under this id and issues its TLS certificate with the id as subject.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import nacl.signing

from common.files import write_atomic
from common.identity import Identity, default_device_id

IDENTITY = "identity.json"


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


def load_or_create_identity(root: Path, key: nacl.signing.VerifyKey, model: str) -> Identity:
    """The device's identity; a device started before any keygen gets one now, with the
    board's ``model`` (a Pi must never enrol later as a simulated device)."""
    identity = load_identity(root)
    if identity is None:
        identity = Identity(default_device_id(key), model=model)
        save_identity(root, identity)
    return identity

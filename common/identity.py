"""Who a device is: its id, role and model. The device keeps it in ``DATA/identity.json``
(:mod:`agent.identity`); enrolment requests carry it to the agency."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import nacl.signing

Role = Literal["body_recorder", "room_controller"]


@dataclass(frozen=True)
class Identity:
    device_id: str
    role: Role = "body_recorder"
    model: str = "unbroken-sim"


def default_device_id(key: nacl.signing.VerifyKey, role: Role = "body_recorder") -> str:
    prefix = "bwc" if role == "body_recorder" else "room"
    return f"{prefix}-{hashlib.sha256(bytes(key)).hexdigest()[:8]}"

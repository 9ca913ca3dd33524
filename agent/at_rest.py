"""Footage at rest is encrypted to the agency (R7): the key a device encrypts to, or why
there is none.

The agency's evidence key (X25519) comes in the device's bundle; only its public half is
ever on the device. A device whose settings keep encryption on (the default) and that
has no such key does not record: footage in the clear is a test bench's explicit choice
(``[storage] encrypt = false``), and every manifest then says so.

Example::

    key = agency_evidence_key(root, config)     # PublicKey, or None when encrypt = false
"""

from __future__ import annotations

import json
from pathlib import Path

import nacl.public

from common.settings import DeviceConfig

BUNDLE = Path("provision") / "bundle.json"


class EvidenceKeyError(RuntimeError):
    """Encryption is on and the device has no agency evidence key: says what to do."""


def agency_evidence_key(root: Path, config: DeviceConfig) -> nacl.public.PublicKey | None:
    """The installed bundle's evidence key; None when the settings turn encryption off."""
    if not config.storage.encrypt:
        return None
    key = installed_evidence_key(root)
    if key is None:
        raise EvidenceKeyError(
            "footage is encrypted to the agency's evidence key, and this device has none: "
            "install a bundle from an agency (`unbroken agent install`), or on a test bench "
            "set [storage] encrypt = false (every manifest then says the footage is in the "
            "clear)"
        )
    return key


def installed_evidence_key(root: Path) -> nacl.public.PublicKey | None:
    """The evidence key in ``DATA/provision/bundle.json`` (None: no bundle, or one from an
    agency before evidence keys)."""
    try:
        payload = json.loads((root / BUNDLE).read_bytes())["payload"]
        hexkey = payload.get("evidence_public_key")
        return None if hexkey is None else nacl.public.PublicKey(bytes.fromhex(hexkey))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvidenceKeyError(f"{root / BUNDLE}: cannot read the evidence key ({e})") from None

"""The device's Ed25519 key. Until provisioning installs one, it is made on first start.

The private key lives in ``DATA/private/device.key`` (0600) and never leaves the device;
the public key is written beside the evidence as ``DATA/device.pub``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.encoding
import nacl.signing

from agent.evidence_dir import PRIVATE, PUBKEY
from common.files import write_atomic


def load_or_create_key(root: Path) -> nacl.signing.SigningKey:
    path = root / PRIVATE / "device.key"
    if path.exists():
        key = nacl.signing.SigningKey(path.read_bytes().strip(), nacl.encoding.HexEncoder)
    else:
        (root / PRIVATE).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = nacl.signing.SigningKey.generate()
        write_atomic(path, key.encode(nacl.encoding.HexEncoder) + b"\n", mode=0o600)
        os.chmod(path, 0o600)
    pub = key.verify_key.encode(nacl.encoding.HexEncoder) + b"\n"
    if not (root / PUBKEY).exists() or (root / PUBKEY).read_bytes() != pub:
        write_atomic(root / PUBKEY, pub)
    return key

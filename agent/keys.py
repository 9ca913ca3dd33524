"""The device's Ed25519 key. Until provisioning installs one, it is made on first start.

The private key never leaves the device. It is kept by the device's key store
(:mod:`device.keystore`): ``DATA/private/device.key`` (0600) with the file backend, or sealed
by the TPM (``DATA/private/device.key.sealed``) with the TPM backend, chosen at keygen. The
public key is written beside the evidence as ``DATA/device.pub``.

Example::

    key = load_or_create_key(root)          # in the store keygen chose (files by default)
    key_store(root).describe()              # {"backend": "tpm", "weaker": False, ...}
"""

from __future__ import annotations

from pathlib import Path

import nacl.encoding
import nacl.signing

from common.files import write_atomic
from device.keystore import KeyStore, open_key_store
from evidence.layout import PRIVATE, PUBKEY


def key_store(root: Path) -> KeyStore:
    """Where this device's private keys are (the file backend unless keygen chose the TPM)."""
    return open_key_store(root / PRIVATE)


def load_or_create_key(root: Path, store: KeyStore | None = None) -> nacl.signing.SigningKey:
    store = store or key_store(root)
    key = store.signing_key()
    if key is None:
        key = nacl.signing.SigningKey.generate()
        store.save_signing_key(key)
    pub = key.verify_key.encode(nacl.encoding.HexEncoder) + b"\n"
    if not (root / PUBKEY).exists() or (root / PUBKEY).read_bytes() != pub:
        write_atomic(root / PUBKEY, pub)
    return key

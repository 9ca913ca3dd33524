"""What provisioning left on the device, read without writing anything.

The device key, the identity, the TLS key, the agency's key and how to reach the broker,
each read from DATA with a :class:`evidence.names.ProvisionError` that says what to run
when it is missing. Writing them is :mod:`agent.enrolment`'s job (keygen, install,
rotation); this module is what the recorder, the uploader and the agent commands read.

Example::

    agency_key(root)        # the key bundles, commands and receipts are checked with
    broker_settings(root)   # -> BrokerSettings(host=..., port=8883, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.signing

from agent.identity import load_identity
from agent.keys import key_store
from common.archive.archive import ArchiveError
from common.archive.device_directory import read_public_key
from common.identity import Identity
from device.keystore import DEVICE_KEY, TLS_KEY, KeyStore
from evidence.layout import CHAIN, PUBKEY
from evidence.names import ProvisionError

if TYPE_CHECKING:
    from agent.uplink import BrokerSettings
    from common.pki import PrivateKey

# The MQTT client (agent.uplink) is loaded by broker_settings, not here: the recorder
# imports this module, and needs no client of its own.

PROVISION = "provision"


def read_device_key(root: Path, store: KeyStore | None = None) -> nacl.signing.SigningKey:
    store = store or key_store(root)
    path = store.path(DEVICE_KEY)
    key = store.signing_key()
    if key is None:
        raise ProvisionError(
            f"{root}: no device key ({path.relative_to(root)}): run `unbroken agent keygen` first"
        )
    pub = root / PUBKEY
    if pub.exists() and pub.read_text().strip() != bytes(key.verify_key).hex():
        raise ProvisionError(f"{pub} does not match {path}: the device key files disagree")
    return key


def read_identity(root: Path) -> Identity:
    try:
        identity = load_identity(root)
    except ValueError as e:
        raise ProvisionError(str(e)) from None
    if identity is None:
        raise ProvisionError(f"{root}: no identity.json: run `unbroken agent keygen` first")
    return identity


def tls_key(root: Path, store: KeyStore | None = None) -> PrivateKey:
    store = store or key_store(root)
    key = store.tls_key()
    if key is None:
        raise ProvisionError(
            f"{root}: no TLS key ({store.path(TLS_KEY).relative_to(root)}): run "
            "`unbroken agent keygen` first"
        )
    return key


def agency_key(root: Path) -> nacl.signing.VerifyKey:
    """The key of the agency this device was provisioned by."""
    path = root / PROVISION / "agency.pub"
    if not path.exists():
        raise ProvisionError(f"{root}: the device is not provisioned (run `agent install`)")
    try:
        return read_public_key(path)
    except ArchiveError as e:
        raise ProvisionError(str(e)) from None


def broker_settings(root: Path) -> BrokerSettings:
    """How the uploader reaches the broker, from the installed bundle."""
    from agent.uplink import BrokerSettings

    agency = agency_key(root)
    bundle = json.loads((root / PROVISION / "bundle.json").read_bytes())["payload"]
    return BrokerSettings(
        host=str(bundle["broker"]["host"]),
        port=int(bundle["broker"]["port"]),
        ca=root / PROVISION / "ca.pem",
        cert=root / PROVISION / "client.pem",
        key=key_store(root).tls_key_file(),  # the TPM's: in memory, never on the card
        agency_key=agency,
    )


def chain_started(root: Path) -> bool:
    return (root / CHAIN).is_dir() and any((root / CHAIN).iterdir())

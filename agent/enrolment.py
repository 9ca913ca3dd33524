"""The device's side of provisioning: make the key and the enrolment request, install the
agency's bundle, rotate the device key. Reading what provisioning left is
:mod:`agent.provisioned`'s job; applying agency-signed commands :mod:`agent.assignment`'s.

Every check runs before anything is written: a refused bundle or command leaves DATA as it
was. What is installed is recorded in the chain (``install``, ``assignment``,
``key_rotation`` entries), so the provenance of the footage starts at enrolment.

Files (beside the evidence layout of :mod:`evidence.layout`)::

    DATA/private/tls.key            the TLS client key (P-256, PEM, 0600); never leaves
                                    (with the TPM key store: tls.key.sealed, see
                                    :mod:`device.keystore`)
    DATA/provision/bundle.json      the installed bundle, as signed by the agency
    DATA/provision/ca.pem           the broker CA
    DATA/provision/client.pem       this device's client certificate (CN = device id)
    DATA/provision/agency.pub       the agency key: bundles, commands, receipts
    DATA/device.toml                the recording settings from the bundle
    DATA/assignment.json            the officers (badges) or room from the last command
    DATA/keys/<key id>.pub          every public key this device has had

Example::

    keygen(root, Path("req.json"), serial="PI-0001", now=time.time())
    install(root, Path("bundle.json").read_bytes(), now=time.time())
    rotate_key(root, Path("rotation.json"), now=time.time())
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import nacl.encoding
import nacl.signing
import tomli_w

from agent.access import check_writable
from agent.chain import open_chain
from agent.config import DEVICE_TOML
from agent.device_lock import LOCK
from agent.identity import save_identity
from agent.journal.chain_index import Journal
from agent.keys import key_store, load_or_create_key
from agent.provisioned import (
    PROVISION,
    agency_key,
    chain_started,
    read_device_key,
    read_identity,
    tls_key,
)
from common.files import write_atomic
from common.identity import Identity, Role, default_device_id
from common.settings import Keys
from device.clock import Clock, SystemClock
from device.keystore import (
    DEVICE_KEY,
    NEXT_KEY,
    RECORD,
    TLS_KEY,
    Backend,
    KeyStore,
    new_key_store,
    record_key_store,
)
from evidence.entries import Install, KeyRotation
from evidence.layout import KEYS, PRIVATE, PUBKEY
from evidence.names import ProvisionError, check_device_id
from evidence.seal import Entry, key_id

# X.509, bundles and requests (the cryptography library) are loaded by the commands that
# use them, not by the recorder, which imports this module for rotation and (through
# agent.assignment) agency commands: 25 MB less resident while recording.


# -- writing: one agent command at a time, and never beside a half-done rotation -----------


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Agent commands that append to the chain exclude each other (and the recorder, once
    it holds the same lock): two sealers on one chain would fork it."""
    (root / PRIVATE).mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / PRIVATE / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError(
                f"{root} is in use by another agent process (the recorder?): stop it first"
            ) from None
        finish_rotation(root)
        yield
    finally:
        os.close(fd)


def _remember_key(root: Path, key: nacl.signing.VerifyKey) -> None:
    (root / KEYS).mkdir(exist_ok=True)
    path = root / KEYS / f"{key_id(key)}.pub"
    if not path.exists():
        write_atomic(path, bytes(key).hex().encode() + b"\n")


# -- keygen ------------------------------------------------------------------------------


def detect_serial() -> str | None:
    """The board's serial number (Raspberry Pi), if this is one."""
    with suppress(OSError, UnicodeDecodeError):
        serial = Path("/sys/firmware/devicetree/base/serial-number").read_bytes()
        if serial.strip(b"\x00\n "):
            return serial.strip(b"\x00\n ").decode()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Serial") and ":" in line:
                return line.split(":", 1)[1].strip() or None
    return None


def keygen(
    root: Path,
    out: Path,
    now: float,
    device_id: str | None = None,
    serial: str | None = None,
    role: str | None = None,
    model: str | None = None,
    backend: Backend | None = None,
    tcti: str | None = None,
) -> Identity:
    """Make (or reuse) the device key and TLS key, fix the identity, write the request.
    ``backend`` (and ``tcti``) choose the key store for a device without keys; None keeps
    the one the device has (files by default)."""
    serial = serial or detect_serial()
    if not serial:
        raise ProvisionError("no hardware serial number found: pass --serial")
    if role not in (None, "body_recorder", "room_controller"):
        raise ProvisionError(f"role {role!r} is not body_recorder or room_controller")
    if device_id is not None:
        check_device_id(device_id)
    check_writable(out, root)  # said before anything is written
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        store = _choose_store(root, backend, tcti)
        existing = read_identity(root) if (root / "identity.json").exists() else None
        if existing is not None or chain_started(root):
            read_device_key(root, store)  # an identity or chain without a key: refuse
        key = load_or_create_key(root, store)
        started = chain_started(root) or (root / PROVISION).exists()
        wanted = role or (existing.role if existing else "body_recorder")
        r: Role = "room_controller" if wanted == "room_controller" else "body_recorder"
        if device_id is None:
            device_id = existing.device_id if existing else default_device_id(key.verify_key, r)
        identity = Identity(device_id, r, model or (existing or Identity(device_id)).model)
        check_device_id(identity.device_id)
        if existing is not None and existing != identity and started:
            raise ProvisionError(
                f"this device is already {existing.device_id} ({existing.role}, "
                f"{existing.model}) and its chain or provisioning depends on that: keygen "
                "cannot change it"
            )
        if existing != identity:
            save_identity(root, identity)
        from common import pki
        from common.requests import make_request

        tls = store.tls_key()
        if tls is None:
            tls = pki.new_key()
            store.save_tls_key(tls)
        _remember_key(root, key.verify_key)
        write_atomic(out, make_request(key, tls, identity, serial, now))
    return identity


def _choose_store(root: Path, backend: Backend | None, tcti: str | None) -> KeyStore:
    """The device's key store, or a new one of ``backend`` for a device without keys (its
    choice recorded first, so that no key is ever made in the wrong place). Keys are never
    moved: the chain and the enrolment depend on them."""
    store = key_store(root)
    has_keys = store.has(DEVICE_KEY) or store.has(TLS_KEY)
    backend = backend or store.backend
    if backend == store.backend and (backend == "file" or tcti in (None, store.tcti)):
        return store
    if has_keys and backend != store.backend:
        where = "in files" if store.backend == "file" else "sealed by a TPM"
        raise ProvisionError(
            f"this device's keys are already {where} ({store.path(DEVICE_KEY)}): keygen keeps a "
            f"device's keys, its chain and enrolment depend on them; the key store is chosen "
            "before the first keygen"
        )
    chosen = new_key_store(root / PRIVATE, backend, tcti or Keys().tcti)
    if has_keys:  # the same TPM reached another way: the keys must unseal through it
        read_device_key(root, chosen)
    chosen.check()  # no TPM, no tools: said now, before anything is written
    if backend == "file":
        (root / PRIVATE / RECORD).unlink(missing_ok=True)
    record_key_store(chosen)
    return chosen


# -- install -----------------------------------------------------------------------------


def install(
    root: Path,
    data: bytes,
    now: float,
    pinned: nacl.signing.VerifyKey | None = None,
    clock: Clock | None = None,
) -> Entry:
    """Check the bundle completely, then install it and seal an ``install`` entry."""
    from common import pki
    from common.bundle import DeviceFacts, check_bundle

    identity = read_identity(root)
    store = key_store(root)
    key = read_device_key(root, store)
    facts = DeviceFacts(
        identity.device_id,
        identity.role,
        bytes(key.verify_key).hex(),
        tls_key(root, store).public_key(),
    )
    installed = root / PROVISION / "agency.pub"
    trusted = agency_key(root) if installed.exists() else None
    if trusted is not None and pinned is not None and bytes(trusted) != bytes(pinned):
        raise ProvisionError(
            f"--agency-key {key_id(pinned)} is not the agency this device is installed with "
            f"({key_id(trusted)})"
        )
    bundle = check_bundle(data, facts, now, trusted or pinned)
    b = bundle.payload
    with locked(root):
        stage = root / f"{PROVISION}.new"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        write_atomic(stage / "bundle.json", data)
        write_atomic(stage / "ca.pem", pki.cert_pem(bundle.ca))
        write_atomic(stage / "client.pem", pki.cert_pem(bundle.client))
        write_atomic(stage / "agency.pub", b.agency_public_key.encode() + b"\n")
        _swap_dir(stage, root / PROVISION)
        write_atomic(root / DEVICE_TOML, tomli_w.dumps(b.settings).encode())
        sealed = Install(
            bundle.sha256,
            b.agency,
            b.device_id,
            b.broker.model_dump(),
            store.backend,  # "file" is weaker: a copied card can sign
        )
        with open_chain(root, key, identity.device_id, clock or SystemClock()) as chain:
            return chain.seal_body(sealed)


def _swap_dir(new: Path, target: Path) -> None:
    """Replace directory ``target`` by ``new`` with renames only."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


# -- key rotation -------------------------------------------------------------------------


def rotate_key(root: Path, out: Path, now: float, clock: Clock | None = None) -> Entry:
    """A new device key; the ``key_rotation`` entry is signed by the old one. The old
    private key is destroyed; its public key stays in DATA/keys/ and the registry."""
    identity = read_identity(root)
    agency_key(root)  # only a provisioned device has an agency to tell
    check_writable(out, root)  # said before anything is written
    with locked(root):
        store = key_store(root)
        old = read_device_key(root, store)
        new = nacl.signing.SigningKey.generate()
        store.save_signing_key(new, NEXT_KEY)  # sealed too, with the TPM key store
        with open_chain(root, old, identity.device_id, clock or SystemClock()) as chain:
            entry = chain.rotate(new)
        from common.requests import make_rotation_request

        request = make_rotation_request(old, new, entry, now)
        finish_rotation(root)
        write_atomic(out, request)
    return entry


def finish_rotation(root: Path) -> None:
    """Complete or undo a rotation cut short (power loss): if the chain's last rotation
    names the pending key, it becomes the device key; otherwise the pending key is dropped.
    The recorder should call this at start, before loading the key."""
    store = key_store(root)
    new = store.signing_key(NEXT_KEY) if store.has(NEXT_KEY) else None
    if new is None:
        return
    last = None
    if (root / "journal.db").exists():
        journal = Journal(root)
        try:
            last = journal.last_body(KeyRotation.KIND, KeyRotation.from_body)
        finally:
            journal.close()
    if last is not None and last.new_key == bytes(new.verify_key).hex():
        old = store.signing_key(DEVICE_KEY)
        if old is not None:
            _remember_key(root, old.verify_key)
        _remember_key(root, new.verify_key)
        store.promote(NEXT_KEY, DEVICE_KEY)
        write_atomic(root / PUBKEY, bytes(new.verify_key).hex().encode() + b"\n")
    else:
        store.discard(NEXT_KEY)

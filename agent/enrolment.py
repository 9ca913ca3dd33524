"""The device's side of provisioning: make the key and the enrolment request, install the
agency's bundle, apply agency-signed commands, rotate the device key.

Every check runs before anything is written: a refused bundle or command leaves DATA as it
was. What is installed is recorded in the chain (``install``, ``assignment``,
``key_rotation`` entries), so the provenance of the footage starts at enrolment.

Files (beside the evidence layout of :mod:`agent.evidence_dir`)::

    DATA/private/tls.key            the TLS client key (P-256, PEM, 0600); never leaves
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
    apply_command(root, Path("assign.json").read_bytes(), now=time.time())
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.signing
import tomli_w

from agent.chain import ChainWriter, open_chain
from agent.config import ASSIGNMENT, DEVICE_TOML
from agent.evidence_dir import CHAIN, KEYS, PRIVATE, PUBKEY, EvidenceDirError, read_public_key
from agent.identity import load_identity, save_identity
from agent.journal import Journal
from agent.keys import load_or_create_key
from agent.uplink import BrokerSettings
from common import pki
from common.bundle import DeviceFacts, check_bundle
from common.commands import SESSION_COMMANDS, AgencyCommand, AssignmentArgs, check_command
from common.files import write_atomic
from common.identity import Identity, Role, default_device_id
from common.requests import make_request, make_rotation_request
from device.clock import Clock, SystemClock
from evidence.names import ProvisionError, check_device_id, iso
from evidence.seal import Entry, key_id

PROVISION = "provision"
TLS_KEY = "tls.key"
DEVICE_KEY = "device.key"
NEXT_KEY = "device.key.next"  # a rotation in progress (see finish_rotation)
LOCK = "agent.lock"


# -- reading the device's own state (never writes) ----------------------------------------


def read_device_key(root: Path) -> nacl.signing.SigningKey:
    path = root / PRIVATE / DEVICE_KEY
    try:
        key = nacl.signing.SigningKey(path.read_bytes().strip(), nacl.encoding.HexEncoder)
    except FileNotFoundError:
        raise ProvisionError(
            f"{root}: no device key ({PRIVATE}/{DEVICE_KEY}): run `unbroken agent keygen` first"
        ) from None
    except (OSError, ValueError) as e:
        raise ProvisionError(f"{path}: not a device key ({e})") from None
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


def _tls_key(root: Path) -> pki.PrivateKey:
    path = root / PRIVATE / TLS_KEY
    try:
        return pki.load_key(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise ProvisionError(
            f"{root}: no TLS key ({PRIVATE}/{TLS_KEY}): run `unbroken agent keygen` first"
        ) from None


def agency_key(root: Path) -> nacl.signing.VerifyKey:
    """The key of the agency this device was provisioned by."""
    path = root / PROVISION / "agency.pub"
    if not path.exists():
        raise ProvisionError(f"{root}: the device is not provisioned (run `agent install`)")
    try:
        return read_public_key(path)
    except EvidenceDirError as e:
        raise ProvisionError(str(e)) from None


def broker_settings(root: Path) -> BrokerSettings:
    """How the uploader reaches the broker, from the installed bundle."""
    agency = agency_key(root)
    bundle = json.loads((root / PROVISION / "bundle.json").read_bytes())["payload"]
    return BrokerSettings(
        host=str(bundle["broker"]["host"]),
        port=int(bundle["broker"]["port"]),
        ca=root / PROVISION / "ca.pem",
        cert=root / PROVISION / "client.pem",
        key=root / PRIVATE / TLS_KEY,
        agency_key=agency,
    )


def _chain_started(root: Path) -> bool:
    return (root / CHAIN).is_dir() and any((root / CHAIN).iterdir())


# -- writing: one agent command at a time, and never beside a half-done rotation -----------


@contextmanager
def _locked(root: Path) -> Iterator[None]:
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


def _seal(
    root: Path,
    key: nacl.signing.SigningKey,
    device_id: str,
    kind: str,
    body: dict[str, Any],
    clock: Clock,
) -> Entry:
    with open_chain(root, key, device_id, clock) as chain:
        return chain.seal(kind, body)


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
) -> Identity:
    """Make (or reuse) the device key and TLS key, fix the identity, write the request."""
    serial = serial or detect_serial()
    if not serial:
        raise ProvisionError("no hardware serial number found: pass --serial")
    if role not in (None, "body_recorder", "room_controller"):
        raise ProvisionError(f"role {role!r} is not body_recorder or room_controller")
    if device_id is not None:
        check_device_id(device_id)
    if not out.parent.is_dir():
        raise ProvisionError(f"{out.parent}: no such directory for the request")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        existing = read_identity(root) if (root / "identity.json").exists() else None
        if existing is not None or _chain_started(root):
            read_device_key(root)  # an identity or chain without a key: refuse, do not re-key
        key = load_or_create_key(root)
        started = _chain_started(root) or (root / PROVISION).exists()
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
        tls_path = root / PRIVATE / TLS_KEY
        if tls_path.exists():
            tls = _tls_key(root)
        else:
            tls = pki.new_key()
            write_atomic(tls_path, pki.key_pem(tls), mode=0o600)
        _remember_key(root, key.verify_key)
        write_atomic(out, make_request(key, tls, identity, serial, now))
    return identity


# -- install -----------------------------------------------------------------------------


def install(
    root: Path,
    data: bytes,
    now: float,
    pinned: nacl.signing.VerifyKey | None = None,
    clock: Clock | None = None,
) -> Entry:
    """Check the bundle completely, then install it and seal an ``install`` entry."""
    identity = read_identity(root)
    key = read_device_key(root)
    facts = DeviceFacts(
        identity.device_id,
        identity.role,
        bytes(key.verify_key).hex(),
        _tls_key(root).public_key(),
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
    with _locked(root):
        stage = root / f"{PROVISION}.new"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        write_atomic(stage / "bundle.json", data)
        write_atomic(stage / "ca.pem", pki.cert_pem(bundle.ca))
        write_atomic(stage / "client.pem", pki.cert_pem(bundle.client))
        write_atomic(stage / "agency.pub", b.agency_public_key.encode() + b"\n")
        _swap_dir(stage, root / PROVISION)
        write_atomic(root / DEVICE_TOML, tomli_w.dumps(b.settings).encode())
        body = {
            "bundle_sha256": bundle.sha256,
            "agency_key_id": b.agency,
            "device_id": b.device_id,
            "broker": b.broker.model_dump(),
        }
        return _seal(root, key, identity.device_id, "install", body, clock or SystemClock())


def _swap_dir(new: Path, target: Path) -> None:
    """Replace directory ``target`` by ``new`` with renames only."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


# -- commands (assignment) ----------------------------------------------------------------


def remember_command(journal: Journal, cmd: AgencyCommand, seq: int, now: float) -> None:
    journal.remember_command(cmd.nonce, cmd.command, cmd.issued, cmd.expires, now, seq)


def current_assignment(root: Path) -> dict[str, Any] | None:
    path = root / ASSIGNMENT
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ProvisionError(f"{path}: not valid JSON") from None
    return doc if isinstance(doc, dict) else None


def apply_command(root: Path, data: bytes, now: float, clock: Clock | None = None) -> Entry:
    """Verify an agency command for this device and apply it: write assignment.json and
    seal an ``assignment`` entry. Refused: forged, foreign, expired, replayed, superseded.
    For a device whose recorder is not running; a running recorder applies commands that
    arrive over MQTT itself (:meth:`agent.recorder.Recorder.apply_command`)."""
    identity = read_identity(root)
    key = read_device_key(root)
    with _locked(root), open_chain(root, key, identity.device_id, clock or SystemClock()) as chain:
        cmd = checked_command(root, chain.journal, data, now)
        if cmd.command in SESSION_COMMANDS:
            raise ProvisionError(
                f"{cmd.command} is for a running room controller: deliver it with "
                "`unbroken store send`"
            )
        return apply_assignment(root, chain, cmd, data, now)


def checked_command(root: Path, journal: Journal, data: bytes, now: float) -> AgencyCommand:
    """Every check of an agency command: signature, this device, validity, role, replay.
    The caller holds the device lock (one sealer per chain)."""
    identity = read_identity(root)
    cmd = check_command(data, agency_key(root), identity.device_id, now)
    room = cmd.command in SESSION_COMMANDS or getattr(cmd.args, "room", None) is not None
    if room and identity.role != "room_controller":
        raise ProvisionError(f"{cmd.command} is for a room, but this device is a body recorder")
    if journal.command_applied(cmd.nonce):
        raise ProvisionError(f"command {cmd.nonce} was already applied: replay refused")
    return cmd


def apply_assignment(
    root: Path, chain: ChainWriter, cmd: AgencyCommand, data: bytes, now: float
) -> Entry:
    """A checked assign/unassign command's effect: ``assignment.json`` written and the
    ``assignment`` entry sealed on the caller's chain."""
    a = cmd.args
    assert isinstance(a, AssignmentArgs)
    current = current_assignment(root)
    if current and float(current.get("issued", 0)) > cmd.issued:
        raise ProvisionError(
            f"command issued {iso(cmd.issued)} is older than the assignment in force "
            f"(issued {iso(float(current['issued']))}): superseded"
        )
    doc = {
        "command": cmd.command,
        "badges": a.badges,
        "name": a.name,
        "unit": a.unit,
        "room": a.room,
        "nonce": cmd.nonce,
        "issued": cmd.issued,
    }
    write_atomic(root / ASSIGNMENT, json.dumps(doc, indent=2, ensure_ascii=False).encode())
    entry = chain.seal("assignment", {**doc, "agency": cmd.agency, "expires": cmd.expires})
    remember_command(chain.journal, cmd, entry.seq, now)
    return entry


# -- key rotation -------------------------------------------------------------------------


def rotate_key(root: Path, out: Path, now: float, clock: Clock | None = None) -> Entry:
    """A new device key; the ``key_rotation`` entry is signed by the old one. The old
    private key is destroyed; its public key stays in DATA/keys/ and the registry."""
    identity = read_identity(root)
    agency_key(root)  # only a provisioned device has an agency to tell
    if not out.parent.is_dir():
        raise ProvisionError(f"{out.parent}: no such directory for the request")
    with _locked(root):
        old = read_device_key(root)
        new = nacl.signing.SigningKey.generate()
        write_atomic(root / PRIVATE / NEXT_KEY, new.encode(nacl.encoding.HexEncoder) + b"\n", 0o600)
        with open_chain(root, old, identity.device_id, clock or SystemClock()) as chain:
            entry = chain.rotate(new)
        request = make_rotation_request(old, new, entry, now)
        finish_rotation(root)
        write_atomic(out, request)
    return entry


def finish_rotation(root: Path) -> None:
    """Complete or undo a rotation cut short (power loss): if the chain's last rotation
    names the pending key, it becomes the device key; otherwise the pending key is dropped.
    The recorder should call this at start, before loading the key."""
    pending = root / PRIVATE / NEXT_KEY
    if not pending.exists():
        return
    new = nacl.signing.SigningKey(pending.read_bytes().strip(), nacl.encoding.HexEncoder)
    last = None
    if (root / "journal.db").exists():
        journal = Journal(root)
        try:
            last = journal.last_of("key_rotation")
        finally:
            journal.close()
    if last is not None and last.body.get("new_key") == bytes(new.verify_key).hex():
        old = nacl.signing.SigningKey(
            (root / PRIVATE / DEVICE_KEY).read_bytes().strip(), nacl.encoding.HexEncoder
        )
        _remember_key(root, old.verify_key)
        _remember_key(root, new.verify_key)
        os.replace(pending, root / PRIVATE / DEVICE_KEY)
        write_atomic(root / PUBKEY, bytes(new.verify_key).hex().encode() + b"\n")
    else:
        pending.unlink()

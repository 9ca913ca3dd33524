"""``unbroken agent ...``: the device's provisioning commands (docs/provisioning.md).

    unbroken agent keygen --data DEVDIR --out REQUEST [--serial S] [--role R] [--device-id D]
                          [--key-store file|tpm] [--tcti TCTI] [--config device.toml]
    unbroken agent install BUNDLE --data DEVDIR [--agency-key FILE]
    unbroken agent apply COMMAND --data DEVDIR
    unbroken agent rotate-key --data DEVDIR --out REQUEST
    unbroken agent status --data DEVDIR

Run them while the recorder is stopped (they append to the chain). Handlers raise
ProvisionError for user errors, leaving DEVDIR unchanged when they refuse.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from agent import enrolment
from agent.config import device_config
from agent.enrolment import LOCK
from agent.evidence_dir import PRIVATE, EvidenceDirError, read_public_key
from agent.keys import key_store
from agent.status_file import read_status
from common import pki
from common.cli import user_errors
from device.keystore import WEAKER, Backend
from evidence.names import ProvisionError, iso
from evidence.seal import key_id


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisionError(f"{path}: no such {what}") from None


@user_errors
def cmd_keygen(args: argparse.Namespace) -> int:
    backend, tcti = _key_store_choice(args)
    identity = enrolment.keygen(
        args.data,
        args.out,
        time.time(),
        device_id=args.device_id,
        serial=args.serial,
        role=args.role,
        model=args.model,
        backend=backend,
        tcti=tcti,
    )
    print(f"device {identity.device_id} ({identity.role}, {identity.model})")
    print(f"  keys {_keys_line(key_store(args.data).describe())}")
    print(f"  enrolment request {args.out}: take it to the agency (`provision enroll`)")
    return 0


def _key_store_choice(args: argparse.Namespace) -> tuple[Backend | None, str | None]:
    """--key-store and --tcti; else the [keys] section of --config (or DATA/device.toml)
    if it has one, for a device that has no keys yet (keys are never moved)."""
    if args.key_store or args.tcti:
        return args.key_store, args.tcti
    if key_store(args.data).has(enrolment.DEVICE_KEY):
        return None, None
    config = device_config(args.data, args.config)
    if "keys" not in config.model_fields_set:
        return None, None
    return config.keys.backend, config.keys.tcti


def _keys_line(k: dict[str, Any]) -> str:
    if k["backend"] == "tpm":
        return f"tpm: sealed by this device's TPM ({k['tcti']}), a copied card cannot sign"
    return f"file (WEAKER: {k.get('note', WEAKER)})"


@user_errors
def cmd_install(args: argparse.Namespace) -> int:
    pinned = None
    if args.agency_key:
        try:
            pinned = read_public_key(args.agency_key)
        except EvidenceDirError as e:
            raise ProvisionError(str(e)) from None
    first = not (args.data / enrolment.PROVISION / "agency.pub").exists()
    entry = enrolment.install(args.data, _read(args.bundle, "bundle"), time.time(), pinned)
    b = entry.body
    note = " (first install: trusting the agency key it carries)" if first and not pinned else ""
    print(f"installed bundle {b['bundle_sha256'][:16]}… from agency {b['agency_key_id']}{note}")
    print(f"  broker {b['broker']['host']}:{b['broker']['port']}; chain entry {entry.seq}")
    print(f"  keys {_keys_line(key_store(args.data).describe())}")
    return 0


@user_errors
def cmd_apply(args: argparse.Namespace) -> int:
    entry = enrolment.apply_command(args.data, _read(args.command, "command"), time.time())
    b = entry.body
    who = ", ".join(b["badges"]) or (f"room {b['room']}" if b["room"] else "nobody")
    print(f"applied {b['command']}: {who}; chain entry {entry.seq}")
    return 0


@user_errors
def cmd_rotate_key(args: argparse.Namespace) -> int:
    entry = enrolment.rotate_key(args.data, args.out, time.time())
    print(f"key {entry.payload['key']} → {entry.body['new_key_id']}; chain entry {entry.seq}")
    print(f"  rotation request {args.out}: import it at the agency (`provision rotate`)")
    return 0


@user_errors
def cmd_status(args: argparse.Namespace) -> int:
    root: Path = args.data
    identity = enrolment.read_identity(root)
    store = key_store(root)
    key = enrolment.read_device_key(root, store)
    out: dict[str, Any] = {
        "device_id": identity.device_id,
        "role": identity.role,
        "key_id": key_id(key.verify_key),
        "key_store": store.describe(),  # backend, weaker (file: a copied card can sign)
        "provisioned": (root / enrolment.PROVISION / "bundle.json").exists(),
        "assignment": enrolment.current_assignment(root),
    }
    if out["provisioned"]:
        bundle = json.loads((root / enrolment.PROVISION / "bundle.json").read_bytes())["payload"]
        client = pki.load_cert((root / enrolment.PROVISION / "client.pem").read_bytes(), "cert")
        out["agency_key_id"] = bundle["agency"]
        out["broker"] = bundle["broker"]
        out["certificate_expires"] = iso(client.not_valid_after_utc.timestamp())
    out["running"] = agent_running(root)
    out["agent"] = read_status(root)  # its last snapshot (live while it runs)
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(format_status(out, time.time()))
    return 0


def agent_running(root: Path) -> bool:
    """Whether an agent process holds this data directory (its lock), or, where the lock
    cannot be opened, whether the process that last wrote the status is alive."""
    try:
        fd = os.open(root / PRIVATE / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:
        pid = (read_status(root) or {}).get("pid")
        return isinstance(pid, int) and _alive(pid)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def format_status(s: dict[str, Any], now: float) -> str:
    """The status as an admin reads it: one line a subject."""
    lines = [f"device   {s['device_id']} ({s['role']}), key {s['key_id']}"]
    if "key_store" in s:
        lines.append(f"keys     {_keys_line(s['key_store'])}")
    if s["provisioned"]:
        b = s["broker"]
        lines.append(
            f"agency   key {s['agency_key_id']}, broker {b['host']}:{b['port']}, certificate "
            f"until {s['certificate_expires']}"
        )
    else:
        lines.append("agency   not provisioned (records, does not sync)")
    a = s.get("agent")
    if not s["running"]:
        when = f"; last status {iso(a['written_at'])}" if a and "written_at" in a else ""
        lines.append(f"agent    not running{when}")
    else:
        lines.append(f"agent    running (pid {a.get('pid') if a else '?'})")
    if a:
        age = now - float(a.get("written_at", now))
        lines.append(
            f"state    {a.get('state')}, session {a.get('session') or '-'}"
            + (f" (as of {age:.0f} s ago)" if age > 5 else "")
        )
        lines.append(f"last error {a.get('last_error') or '-'}")
        st = a.get("storage")
        if st:
            lines.append(f"storage  {st['free'] / 1e9:.1f} GB free of {st['total'] / 1e9:.1f} GB")
        bat = a.get("battery")
        if bat:
            power = ", external power" if bat["external_power"] else ""
            lines.append(f"battery  {bat['percent']:.0f} %{power}")
        g = a.get("gnss") or {}
        if g.get("fix"):
            lines.append(f"gnss     fix {g['lat']:.5f}, {g['lon']:.5f} ({g['age']} s old)")
        else:
            last = f", last fix {g['age']} s ago" if g.get("age") is not None else ", never a fix"
            lines.append(f"gnss     no fix{last}")
        c = a.get("clock") or {}
        lines.append(f"clock    {'synchronised' if c.get('synced') else 'NOT synchronised'}")
        sync = a.get("sync")
        if sync:
            backlog = sync.get("backlog") or {}
            lines.append(
                f"sync     {'connected' if sync['connected'] else 'not connected'}, deadline "
                f"{sync['deadline']}, backlog {backlog.get('blobs', '?')} segment(s) / "
                f"{backlog.get('bytes', '?')} B"
            )
    return "\n".join(lines)


def add_agent_parser(sub: argparse._SubParsersAction) -> None:
    """A standalone ``agent`` command holding only the provisioning subcommands."""
    p = sub.add_parser("agent", help="device: key, enrolment request, bundle, commands")
    add_agent_commands(p.add_subparsers(dest="agent_command", required=True))


def add_agent_commands(ps: argparse._SubParsersAction) -> None:
    """Add keygen, install, apply, rotate-key and status to an ``agent`` subcommand tree."""
    q = ps.add_parser("keygen", help="make the device key and write an enrolment request")
    q.add_argument("--data", type=Path, required=True, help="device data directory")
    q.add_argument("--out", type=Path, required=True, help="enrolment request to write")
    q.add_argument("--device-id", help="device id (default: from the key)")
    q.add_argument("--serial", help="hardware serial (default: the board's)")
    q.add_argument("--role", choices=["body_recorder", "room_controller"])
    q.add_argument("--model", help="hardware model")
    q.add_argument(
        "--key-store",
        choices=["file", "tpm"],
        help="where a device without keys keeps them: tpm (sealed by its TPM 2.0) or file "
        "(weaker: a copied card can sign); default: [keys] backend of the configuration",
    )
    q.add_argument("--tcti", help="how to reach the TPM (default: device:/dev/tpmrm0)")
    q.add_argument("--config", type=Path, help="device.toml with a [keys] section")
    q.set_defaults(func=cmd_keygen)

    q = ps.add_parser("install", help="check and install a provisioning bundle")
    q.add_argument("bundle", type=Path)
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--agency-key", type=Path, help="agency public key to require (hex file)")
    q.set_defaults(func=cmd_install)

    q = ps.add_parser("apply", help="check and apply an agency-signed command")
    q.add_argument("command", type=Path)
    q.add_argument("--data", type=Path, required=True)
    q.set_defaults(func=cmd_apply)

    q = ps.add_parser("rotate-key", help="replace the device key; write a rotation request")
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--out", type=Path, required=True, help="rotation request to write")
    q.set_defaults(func=cmd_rotate_key)

    q = ps.add_parser(
        "status",
        help="identity, provisioning, and the running agent's state, storage, "
        "battery, GNSS, clock and sync",
    )
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_status)

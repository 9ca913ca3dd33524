"""``unbroken agent ...``: the device's provisioning commands (docs/provisioning.md).

    unbroken agent keygen --data DEVDIR --out REQUEST [--serial S] [--role R] [--device-id D]
                          [--model M | --sim] [--key-store file|tpm] [--tcti TCTI]
                          [--config device.toml]
    unbroken agent install BUNDLE --data DEVDIR [--agency-key FILE]
    unbroken agent apply COMMAND --data DEVDIR
    unbroken agent rotate-key --data DEVDIR --out REQUEST
    unbroken agent status --data DEVDIR [--json]

Run them while the recorder is stopped (they append to the chain), as the user that owns
DEVDIR (on a board, the service user: ``sudo -u unbroken -- unbroken agent ...``). REQUEST
``-`` is standard output and BUNDLE or COMMAND ``-`` standard input, so that the service
user needs no file of the login user's. Handlers raise ProvisionError for user errors,
leaving DEVDIR unchanged when they refuse; a permission error names the user, the file and
the directory that stopped it (:mod:`agent.access`).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent import assignment, enrolment, provisioned
from agent.access import denied
from agent.board import board_model
from agent.config import device_config
from agent.device_lock import LOCK
from agent.identity import IDENTITY
from agent.keys import key_store
from agent.status_file import read_status
from agent.status_text import format_status, keys_line
from common import pki
from common.archive.archive import ArchiveError
from common.archive.device_directory import read_public_key
from common.cli import Handler, user_errors
from device.keystore import Backend
from evidence.entries import Assignment, Install, KeyRotation
from evidence.layout import PRIVATE, PUBKEY
from evidence.names import ProvisionError, iso
from evidence.seal import key_id

STDIO = Path("-")


def explained(fn: Handler) -> Handler:
    """A permission error names the user, the file, the directory that stopped it and what
    to run instead; other file-system errors as every command says them."""

    @user_errors
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except PermissionError as e:
            if not e.filename:
                raise
            argv = sys.argv[1:] if "agent" in sys.argv[1:3] else ()
            raise ProvisionError(denied(e.filename, args.data, argv)) from None

    return run


def _read(path: Path, what: str) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisionError(f"{path}: no such {what}") from None


@contextmanager
def _output(out: Path) -> Iterator[Path]:
    """Where a command writes its request: ``out``, or for ``-`` a private temporary file
    copied to standard output once the command succeeded."""
    if out != STDIO:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="unbroken-") as tmp:
        path = Path(tmp) / "request.json"
        yield path
        sys.stdout.buffer.write(path.read_bytes())
        sys.stdout.flush()


def _named(out: Path) -> str:
    return "on standard output" if out == STDIO else str(out)


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    """Messages go to standard error when standard output carries the request."""
    stream = sys.stderr if args.out == STDIO else sys.stdout
    return lambda line: print(line, file=stream)


@explained
def cmd_keygen(args: argparse.Namespace) -> int:
    backend, tcti = _key_store_choice(args)
    model = args.model
    if model is None and not (args.data / IDENTITY).exists():
        model = board_model(simulated=args.sim)  # a device enrolled before keeps its own
    with _output(args.out) as out:
        identity = enrolment.keygen(
            args.data,
            out,
            time.time(),
            device_id=args.device_id,
            serial=args.serial,
            role=args.role,
            model=model,
            backend=backend,
            tcti=tcti,
        )
    say = _say(args)
    say(f"device {identity.device_id} ({identity.role}, {identity.model})")
    say(f"  keys {keys_line(key_store(args.data).describe())}")
    say(f"  enrolment request {_named(args.out)}: take it to the agency (`provision enroll`)")
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


@explained
def cmd_install(args: argparse.Namespace) -> int:
    pinned = None
    if args.agency_key:
        try:
            pinned = read_public_key(args.agency_key)
        except ArchiveError as e:
            raise ProvisionError(str(e)) from None
    first = not (args.data / provisioned.PROVISION / "agency.pub").exists()
    entry = enrolment.install(args.data, _read(args.bundle, "bundle"), time.time(), pinned)
    b = Install.from_body(entry.body)
    note = " (first install: trusting the agency key it carries)" if first and not pinned else ""
    print(f"installed bundle {b.bundle_sha256[:16]}… from agency {b.agency_key_id}{note}")
    print(f"  broker {b.broker.get('host')}:{b.broker.get('port')}; chain entry {entry.seq}")
    print(f"  keys {keys_line(key_store(args.data).describe())}")
    return 0


@explained
def cmd_apply(args: argparse.Namespace) -> int:
    entry = assignment.apply_command(args.data, _read(args.command, "command"), time.time())
    a = Assignment.from_body(entry.body)
    who = ", ".join(a.badges) or (f"room {a.room}" if a.room else "nobody")
    print(f"applied {a.command}: {who}; chain entry {entry.seq}")
    return 0


@explained
def cmd_rotate_key(args: argparse.Namespace) -> int:
    with _output(args.out) as out:
        entry = enrolment.rotate_key(args.data, out, time.time())
    say = _say(args)
    rotated = KeyRotation.from_body(entry.body)
    say(f"key {entry.payload['key']} → {rotated.new_key_id}; chain entry {entry.seq}")
    say(f"  rotation request {_named(args.out)}: import it at the agency (`provision rotate`)")
    return 0


@explained
def cmd_status(args: argparse.Namespace) -> int:
    root: Path = args.data
    identity = provisioned.read_identity(root)
    out: dict[str, Any] = {
        "device_id": identity.device_id,
        "role": identity.role,
        "model": identity.model,
        "key_id": _key_id(root),
        "key_store": _key_store(root),  # backend, weaker (file: a copied card can sign)
        "provisioned": (root / provisioned.PROVISION / "bundle.json").exists(),
        "assignment": assignment.current_assignment(root),
    }
    if out["provisioned"]:
        bundle = json.loads((root / provisioned.PROVISION / "bundle.json").read_bytes())["payload"]
        client = pki.load_cert((root / provisioned.PROVISION / "client.pem").read_bytes(), "cert")
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


def _key_id(root: Path) -> str:
    """From the device key (which must load: a card moved to another TPM is refused), or,
    for a member of the agent's group, who may not read the private keys, from the public
    key beside them."""
    try:
        return key_id(provisioned.read_device_key(root).verify_key)
    except PermissionError:
        try:
            return key_id(read_public_key(root / PUBKEY))
        except ArchiveError as e:
            raise ProvisionError(str(e)) from None


def _key_store(root: Path) -> dict[str, Any]:
    try:
        return key_store(root).describe()
    except PermissionError:
        return {"backend": None, "unreadable": f"{root / PRIVATE} is the agent user's only"}


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


def add_agent_parser(sub: argparse._SubParsersAction) -> None:
    """A standalone ``agent`` command holding only the provisioning subcommands."""
    p = sub.add_parser("agent", help="device: key, enrolment request, bundle, commands")
    add_agent_commands(p.add_subparsers(dest="agent_command", required=True))


def add_agent_commands(ps: argparse._SubParsersAction) -> None:
    """Add keygen, install, apply, rotate-key and status to an ``agent`` subcommand tree."""
    q = ps.add_parser("keygen", help="make the device key and write an enrolment request")
    q.add_argument("--data", type=Path, required=True, help="device data directory")
    q.add_argument(
        "--out", type=Path, required=True, help="enrolment request to write (-: standard output)"
    )
    q.add_argument("--device-id", help="device id (default: from the key)")
    q.add_argument("--serial", help="hardware serial (default: the board's)")
    q.add_argument("--role", choices=["body_recorder", "room_controller"])
    model = q.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        help="hardware model (default: the board's, from its device tree or DMI)",
    )
    model.add_argument("--sim", action="store_true", help="a simulated device: model unbroken-sim")
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
    q.add_argument("bundle", type=Path, help="the bundle from the agency (-: standard input)")
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--agency-key", type=Path, help="agency public key to require (hex file)")
    q.set_defaults(func=cmd_install)

    q = ps.add_parser("apply", help="check and apply an agency-signed command")
    q.add_argument("command", type=Path, help="the agency's command (-: standard input)")
    q.add_argument("--data", type=Path, required=True)
    q.set_defaults(func=cmd_apply)

    q = ps.add_parser("rotate-key", help="replace the device key; write a rotation request")
    q.add_argument("--data", type=Path, required=True)
    q.add_argument(
        "--out", type=Path, required=True, help="rotation request to write (-: standard output)"
    )
    q.set_defaults(func=cmd_rotate_key)

    q = ps.add_parser(
        "status",
        help="identity, provisioning, assignment, and the running agent's state, gaps, "
        "storage, battery, GNSS, clock and sync",
    )
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_status)

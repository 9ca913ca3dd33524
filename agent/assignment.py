"""Agency commands applied to this device: every check, and an assignment's effect.

:func:`checked_command` is every check of an agency-signed command (signature, this
device, validity, role, replay), for the recorder's commands over MQTT
(:mod:`agent.agency_commands`) and the agent's own (:func:`apply_command`) alike. An
assign or unassign command then writes ``assignment.json`` (the officers' badges, or the
room) and seals an ``assignment`` entry; the command is remembered so it applies once.

Example::

    apply_command(root, Path("assign.json").read_bytes(), now=time.time())
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.chain import ChainWriter, open_chain
from agent.config import ASSIGNMENT
from agent.enrolment import locked
from agent.journal.chain_index import Journal
from agent.provisioned import agency_key, read_device_key, read_identity
from common.commands import SESSION_COMMANDS, AgencyCommand, AssignmentArgs, check_command
from common.files import write_atomic
from device.clock import Clock, SystemClock
from evidence.entries import Assignment
from evidence.names import ProvisionError, iso
from evidence.seal import Entry


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
    with locked(root), open_chain(root, key, identity.device_id, clock or SystemClock()) as chain:
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
    sealed = Assignment(
        cmd.command, list(a.badges), a.name, a.unit, a.room,
        cmd.nonce, cmd.issued, cmd.agency, cmd.expires,
    )  # fmt: skip
    # assignment.json: what is in force, as sealed, less the command's agency and expiry
    doc = {k: v for k, v in sealed.to_body().items() if k not in ("agency", "expires")}
    write_atomic(root / ASSIGNMENT, json.dumps(doc, indent=2, ensure_ascii=False).encode())
    entry = chain.seal_body(sealed)
    remember_command(chain.journal, cmd, entry.seq, now)
    return entry

"""Agency commands that reach a running recorder over MQTT: an assignment (officers'
badges, a room) or the case system opening or closing a room session.

Each is checked completely (signature, this device, validity, role, replay) before it
changes anything, sealed on the recorder's chain, and remembered so it applies once. Each
is answered, signed by the device key: applied, or refused with the reason (a command
delivered again after it was applied is answered ``applied`` again, and changes nothing).

Example::

    commands = AgencyCommands(root, chain, life, room)
    entry = commands.apply(data, now=clock.wall())   # ProvisionError/SessionError if refused
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agent.assignment import apply_assignment, checked_command, remember_command
from agent.chain import ChainWriter
from agent.config import assigned_room
from agent.lifecycle import SessionLifecycle
from agent.provisioned import agency_key
from agent.room_control import RoomControl
from agent.session import SessionError
from common.commands import Outcome, SessionArgs, check_command, command_nonce, make_answer
from evidence.entries import Assignment
from evidence.names import ProvisionError
from evidence.seal import Entry

log = logging.getLogger(__name__)

# The reason an answer to a repeat delivery gives: applied once, when first delivered.
REPEAT = "delivered again: applied once, before"


class AgencyCommands:
    def __init__(
        self, root: Path, chain: ChainWriter, life: SessionLifecycle, room: RoomControl | None
    ) -> None:
        self.root = root
        self.chain = chain
        self.life = life
        self.room = room
        self.room_id = assigned_room(root)  # the room this controller is assigned to
        # Where each signed answer goes (the uploader publishes it to the store); None: a
        # command applied from a file, answered by the command line itself.
        self.answers: Callable[[bytes], None] | None = None

    def apply(self, data: bytes, now: float) -> Entry | None:
        """Check and apply one command, and answer it (signed: applied, or refused with
        the reason); the entry sealed for it (None: a repeat, or a room command that sealed
        nothing). Raises ProvisionError or SessionError naming the refusal."""
        claimed = command_nonce(data)
        try:
            entry, repeat = self._apply(data, now)
        except (ProvisionError, SessionError) as e:
            log.warning("agency command refused: %s", e)
            self._answer(claimed, "refused", str(e), None, now)
            raise
        if repeat and claimed is not None:  # the entry sealed when it was applied
            seq = self.chain.journal.applied_command_seq(claimed[0])
            self._answer(claimed, "applied", REPEAT, seq, now)
        else:
            self._answer(claimed, "applied", "", entry.seq if entry is not None else None, now)
        return entry

    def _apply(self, data: bytes, now: float) -> tuple[Entry | None, bool]:
        journal = self.chain.journal
        # Delivered again (the store delivers until it has the answer): verified as
        # before, then answered again, never applied twice.
        cmd = check_command(data, agency_key(self.root), self.chain.device_id, now)
        if journal.command_applied(cmd.nonce):
            return None, True
        cmd = checked_command(self.root, journal, data, now)
        if isinstance(cmd.args, SessionArgs):
            if self.room is None:
                raise SessionError(f"{cmd.command}: this device serves no room")
            entry = self.room.case_command(cmd, cmd.args)
            if entry is not None:
                remember_command(journal, cmd, entry.seq, now)
            return entry, False
        entry = apply_assignment(self.root, self.chain, cmd, data, now)
        log.info("agency command %s applied (entry %s)", cmd.command, entry.seq)
        self.life.badges = list(Assignment.from_body(entry.body).badges)
        self.room_id = assigned_room(self.root)
        return entry, False

    def _answer(
        self,
        claimed: tuple[str, str] | None,
        outcome: Outcome,
        reason: str,
        seq: int | None,
        now: float,
    ) -> None:
        if self.answers is None or claimed is None:
            return  # nothing to answer to: not even a nonce to name
        nonce, name = claimed
        answer = make_answer(self.chain.device_id, nonce, name, outcome, reason, seq, now)
        self.answers(self.chain.sign(answer.model_dump()))

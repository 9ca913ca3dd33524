"""Agency commands that reach a running recorder over MQTT: an assignment (officers'
badges, a room) or the case system opening or closing a room session.

Each is checked completely (signature, this device, validity, role, replay) before it
changes anything, sealed on the recorder's chain, and remembered so it applies once.

Example::

    commands = AgencyCommands(root, chain, life, room)
    entry = commands.apply(data, now=clock.wall())   # ProvisionError/SessionError if refused
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.chain import ChainWriter
from agent.config import assigned_room
from agent.enrolment import apply_assignment, checked_command, remember_command
from agent.lifecycle import SessionLifecycle
from agent.room_control import RoomControl
from agent.session import SessionError
from common.commands import SessionArgs
from evidence.seal import Entry

log = logging.getLogger(__name__)


class AgencyCommands:
    def __init__(
        self, root: Path, chain: ChainWriter, life: SessionLifecycle, room: RoomControl | None
    ) -> None:
        self.root = root
        self.chain = chain
        self.life = life
        self.room = room
        self.room_id = assigned_room(root)  # the room this controller is assigned to

    def apply(self, data: bytes, now: float) -> Entry | None:
        """Check and apply one command; the entry sealed for it (None: a room command
        that sealed nothing). Raises ProvisionError or SessionError naming the refusal."""
        journal = self.chain.journal
        try:
            cmd = checked_command(self.root, journal, data, now)
        except Exception as e:
            log.warning("agency command refused: %s", e)
            raise
        if isinstance(cmd.args, SessionArgs):
            if self.room is None:
                raise SessionError(f"{cmd.command}: this device serves no room")
            entry = self.room.case_command(cmd, cmd.args)
            if entry is not None:
                remember_command(journal, cmd, entry.seq, now)
            return entry
        entry = apply_assignment(self.root, self.chain, cmd, data, now)
        log.info("agency command %s applied (entry %s)", cmd.command, entry.seq)
        self.life.badges = list(entry.body.get("badges") or [])
        self.room_id = assigned_room(self.root)
        return entry

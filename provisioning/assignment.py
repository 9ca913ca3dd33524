"""Assignment and commands: the signed agency commands that assign a device to its
officers or its room, take that back, and open or close an interview-room session. The
registry keeps each assignment it signed (:class:`AgencyDirectory`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from common.commands import AgencyCommand, Name, make_command
from evidence.names import ProvisionError, check_name
from provisioning.agency_directory import AgencyDirectory


class Assignment(AgencyDirectory):
    """The agency's assignment jobs (a part of :class:`provisioning.agency.Agency`)."""

    def assign(
        self,
        device_id: str,
        out: Path,
        now: float,
        badges: list[str] | None = None,
        name: str | None = None,
        unit: str | None = None,
        room: str | None = None,
    ) -> AgencyCommand:
        badges = badges or []
        with self.change() as files:
            device = self._live_device(device_id)
            if device["role"] == "room_controller":
                if room is None:
                    raise ProvisionError(f"{device_id} is a room controller: name its --room")
                check_name(room, "room")
            else:
                if room is not None:
                    raise ProvisionError(f"{device_id} is a body recorder: it serves no room")
                if not badges:
                    raise ProvisionError(f"assigning body recorder {device_id} needs a --badge")
            args = {"badges": badges, "name": name, "unit": unit, "room": room}
            return self._command(device_id, "assign", args, out, now, files)

    def unassign(self, device_id: str, out: Path, now: float) -> AgencyCommand:
        with self.change() as files:
            self._live_device(device_id)
            if self.registry.assignment(device_id) is None:
                raise ProvisionError(f"device {device_id!r} has no assignment")
            args: dict[str, Any] = {"badges": [], "name": None, "unit": None, "room": None}
            return self._command(device_id, "unassign", args, out, now, files)

    def session_command(
        self,
        device_id: str,
        name: Literal["session_open", "session_close"],
        args: dict[str, Any],
        out: Path,
        now: float,
        ttl: float = 600.0,
    ) -> AgencyCommand:
        """The case system opens or closes an interview-room session: a command signed by
        the agency, for one room controller, valid ``ttl`` seconds (short: it acts now)."""
        with self.change() as files:
            device = self._live_device(device_id)
            if device["role"] != "room_controller":
                raise ProvisionError(f"{device_id} is a body recorder: sessions open by button")
            assigned = self.registry.assignment(device_id)
            if assigned is None or not assigned.get("room"):  # the room would refuse it
                raise ProvisionError(
                    f"{device_id} serves no room yet: assign it one first "
                    f"(unbroken provision assign --device {device_id} --room ROOM)"
                )
            data, cmd = make_command(self.signing_key, device_id, name, args, now, ttl)
            self.registry.audit(now, name, device_id, **args, nonce=cmd.nonce)
            files.append((out, data, 0o644))
            return cmd

    def _command(
        self,
        device_id: str,
        name: Name,
        args: dict[str, Any],
        out: Path,
        now: float,
        files: list[tuple[Path, bytes, int]],
    ) -> AgencyCommand:
        data, cmd = make_command(
            self.signing_key, device_id, name, args, now, self.config.command_hours * 3600
        )
        self.registry.add_assignment(
            {
                "device_id": device_id,
                "command": name,
                **args,
                "issued": cmd.issued,
                "expires": cmd.expires,
                "nonce": cmd.nonce,
                "command_sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        self.registry.audit(now, name, device_id, **args, nonce=cmd.nonce)
        files.append((out, data, 0o644))
        return cmd

"""Agency → device commands: signed, short-lived, for one device, with a nonce.

A command travels as a file (``provision assign --out``, ``agent apply``) or is published
on ``unbroken/c/<device>/<command>`` (``store send``). The device refuses a command that is
forged, for another device, expired, already applied (nonce seen) or older than the one in
force (superseded). ``assign``/``unassign`` say who carries a device or which room a
controller serves; ``session_open``/``session_close`` are the case system opening and
closing an interview-room session (case, officers, person interviewed).

Example::

    data = make_command(agency_key, "bwc-1", "assign", {"badges": ["012345"]}, now, ttl=86400)
    cmd = check_command(data, agency_key.verify_key, "bwc-1", now)
    cmd.command, cmd.args.badges, cmd.nonce
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

import nacl.signing
from pydantic import Field, field_validator, model_validator

from evidence import signed
from evidence.models import Strict, validate
from evidence.seal import key_id

Name = Literal["assign", "unassign", "session_open", "session_close"]
SESSION_COMMANDS = ("session_open", "session_close")
_BADGE = re.compile(r"^[^\x00-\x1f\x7f]{1,32}$")


def _printable_badges(badges: list[str]) -> list[str]:
    for b in badges:
        if not _BADGE.match(b):
            raise ValueError(f"badge {b!r} is not 1-32 printable characters")
    return badges


class AssignmentArgs(Strict):
    """Who carries the device (badges, name, unit), or which room a controller serves."""

    badges: list[str] = Field(default_factory=list, max_length=8)
    name: str | None = Field(None, max_length=100)
    unit: str | None = Field(None, max_length=100)
    room: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")

    _badges = field_validator("badges")(_printable_badges)


class SessionArgs(Strict):
    """An interview-room session as the case system opens (or closes) it."""

    case: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    badges: list[str] = Field(default_factory=list, max_length=8)
    person: str | None = Field(None, max_length=100, description="the person interviewed")
    category: str | None = Field(None, max_length=32)
    note: str | None = Field(None, max_length=200)
    session: str | None = Field(
        None, max_length=64, pattern=r"^[0-9a-f-]+$", description="the session a close closes"
    )

    _badges = field_validator("badges")(_printable_badges)


class AgencyCommand(Strict):
    type: Literal["command"]
    v: Literal[1]
    agency: str
    command: Name
    device: str
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    issued: float
    expires: float
    args: AssignmentArgs | SessionArgs

    @model_validator(mode="after")
    def _args_fit(self) -> AgencyCommand:
        want = SessionArgs if self.command in SESSION_COMMANDS else AssignmentArgs
        if not isinstance(self.args, want):
            raise ValueError(f"{self.command} takes {want.__name__} arguments")
        return self


def make_command(
    agency_key: nacl.signing.SigningKey,
    device: str,
    command: Name,
    args: dict[str, Any],
    now: float,
    ttl: float,
) -> tuple[bytes, AgencyCommand]:
    payload = {
        "type": "command",
        "v": 1,
        "agency": key_id(agency_key.verify_key),
        "command": command,
        "device": device,
        "nonce": secrets.token_hex(16),
        "issued": now,
        "expires": now + ttl,
        "args": args,
    }
    cmd = validate(AgencyCommand, payload, "command")
    return signed.sign(agency_key, payload), cmd


def check_command(
    data: bytes, agency: nacl.signing.VerifyKey, device: str, now: float
) -> AgencyCommand:
    raw = signed.open_agency_doc(data, agency, kind="command", now=now, device=device)
    return validate(AgencyCommand, raw, "command")

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
from pydantic import Field, ValidationInfo, field_validator, model_validator

from common.settings import Category
from evidence import signed
from evidence.models import Strict, validate
from evidence.seal import key_id

Name = Literal["assign", "unassign", "session_open", "session_close"]
SESSION_COMMANDS = ("session_open", "session_close")
_BADGE = re.compile(r"^[^\x00-\x1f\x7f]{1,32}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")


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
    category: Category | None = Field(None, description="an enforcement category (R-Art 2)")
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

    @field_validator("args", mode="before")
    @classmethod
    def _args_of_command(cls, value: Any, info: ValidationInfo) -> Any:
        # Validated as the command's own arguments, so an error names that model's fields
        # (an unknown category lists the allowed ones) rather than every union branch.
        if isinstance(value, AssignmentArgs | SessionArgs) or "command" not in info.data:
            return value
        want = SessionArgs if info.data["command"] in SESSION_COMMANDS else AssignmentArgs
        return want.model_validate(value)

    @model_validator(mode="after")
    def _args_fit(self) -> AgencyCommand:
        want = SessionArgs if self.command in SESSION_COMMANDS else AssignmentArgs
        if not isinstance(self.args, want):
            raise ValueError(f"{self.command} takes {want.__name__} arguments")
        return self


Outcome = Literal["applied", "refused"]


class CommandAnswer(Strict):
    """A device's answer to one agency command, signed by the device key: ``applied``
    (``seq``: the entry sealed for it, if any) or ``refused`` with the reason. A command
    delivered again after it was applied is answered ``applied`` again: delivery is at
    least once, the effect once."""

    type: Literal["command_answer"]
    v: Literal[1]
    device: str = Field(min_length=1, max_length=64)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    command: str = Field(max_length=32)
    outcome: Outcome
    reason: str = Field("", max_length=500)
    seq: int | None = Field(None, ge=1)
    at: float


def make_answer(
    device: str, nonce: str, command: str, outcome: Outcome, reason: str, seq: int | None, at: float
) -> CommandAnswer:
    return CommandAnswer(
        type="command_answer",
        v=1,
        device=device,
        nonce=nonce,
        command=command[:32],
        outcome=outcome,
        reason=reason[:500],
        seq=seq,
        at=at,
    )


def command_nonce(data: bytes) -> tuple[str, str] | None:
    """The (nonce, command name) an agency command claims, unverified: what a refusal
    answers to. None when the document does not even say that."""
    try:
        payload, _ = signed.parse(data, "command")
    except signed.SignedError:
        return None
    nonce, name = payload.get("nonce"), payload.get("command")
    if not isinstance(nonce, str) or not _NONCE.match(nonce) or not isinstance(name, str):
        return None
    return nonce, name


def open_answer(data: bytes, keys: list[nacl.signing.VerifyKey], device: str) -> CommandAnswer:
    """A device's signed answer, checked against the device's keys (any it holds: an
    answer may be signed just before a rotation); ProvisionError naming what is wrong."""
    payload, signature = signed.parse(data, "command answer")
    answer = validate(CommandAnswer, payload, "command answer")
    if answer.device != device:
        raise signed.SignedError(f"an answer for device {answer.device!r} sent by {device!r}")
    for key in keys:
        try:
            signed.verify(payload, signature, key, "")
            return answer
        except signed.SignedError:
            continue
    raise signed.SignedError(f"answer from {device} does not verify with its keys (forged)")


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

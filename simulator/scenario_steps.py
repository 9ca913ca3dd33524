"""A scenario's timeline step: a tester's command (:mod:`simulator.control_commands`, the
same models the control channel takes) or one of the few verbs only the runner carries out
(:data:`RUNNER_VERBS`), at a scenario second, on the devices a pattern names.

In the file a step is flat (``at``, ``device``, ``do`` and the command's fields); here it
is a :class:`Step` holding its ``command``, so a step the device would refuse (a marker's
note longer than the device seals) is refused when the scenario loads, naming the step,
not in the middle of the run.

Example::

    step = Step.model_validate({"at": 3, "do": "marker", "type": "credential_shown"})
    step.command        # Marker(cmd='marker', type=<MarkerType.CREDENTIAL_SHOWN: …>, note='')
    step_refusal(step, [device], badges=set())   # None: every device named can do it
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.commands import SessionArgs
from evidence.gaps import CAUSES
from simulator.control_commands import (
    COMMANDS,
    CameraCmd,
    Command,
    Hold,
    Marker,
    Press,
    StorageCmd,
    Walk,
)


class _Verb(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerCut(_Verb):
    cmd: Literal["power_cut"]


class PowerOff(_Verb):
    cmd: Literal["power_off"]


class Boot(_Verb):
    cmd: Literal["boot"]
    clock_offset_hours: float | None = Field(None, ge=-24 * 30, le=24 * 30)
    network: bool | None = None


class Door(_Verb):
    cmd: Literal["door"]
    state: Literal["open", "closed"]


class Key(_Verb):
    cmd: Literal["key"]
    state: Literal["start", "stop"]


class CaseOpen(SessionArgs):
    """The case system opens a room session: the agency command's own arguments."""

    cmd: Literal["case_open"]


class CaseClose(SessionArgs):
    cmd: Literal["case_close"]


class Statement(_Verb):
    cmd: Literal["statement"]
    reason: str = Field(min_length=1)
    officers: list[str] = Field(min_length=1, description="Badges of the officers attesting.")
    where: Literal["device", "store"] = "device"
    cause: str | None = Field(None, description="Which gap: the last unexplained of this cause.")

    @field_validator("cause")
    @classmethod
    def _known(cls, cause: str | None) -> str | None:
        if cause is not None and cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}; one of {', '.join(CAUSES)}")
        return cause


RunnerVerb = PowerCut | PowerOff | Boot | Door | Key | CaseOpen | CaseClose | Statement
# Carried out by the runner itself: the process (power, boot), the broker as a real panel
# (door, key), the case system's signed commands, and written statements.
RUNNER_VERBS = (
    "power_cut",
    "power_off",
    "boot",
    "door",
    "key",
    "case_open",
    "case_close",
    "statement",
)
VERBS = (*(c for c in COMMANDS if c != "status"), *RUNNER_VERBS)
ROOM_ONLY = ("door", "key", "case_open", "case_close", "panel")
# Steps that need agent processes, the broker or the store: not in --fast.
REAL_TIME_VERBS = {
    "power_cut": "a power cut kills an agent process",
    "network": "the network is the real broker",
    "statement": "(where = 'store') the statement is added at the store",
}


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(ge=0, description="Seconds after the start of the scenario.")
    device: str = Field("*", description="A device id or a pattern (fnmatch: bwc-*, *).")
    command: Annotated[Command | RunnerVerb, Field(discriminator="cmd")]

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        """The file's flat step (``do`` and the command's fields beside ``at``) as a step
        holding its command."""
        if not isinstance(data, dict) or "command" in data:
            return data
        do = data.get("do")
        if not isinstance(do, str):
            raise ValueError(f"a step needs do = one of: {', '.join(VERBS)}")
        if do not in VERBS:
            raise ValueError(f"unknown step {do[:40]!r}; one of: {', '.join(VERBS)}")
        if "cmd" in data:
            raise ValueError("'cmd' is no field of a step: do says what it does")
        fields = {k: v for k, v in data.items() if k not in ("at", "device", "do")}
        where = {k: data[k] for k in ("at", "device") if k in data}
        return {**where, "command": {**fields, "cmd": do}}

    @property
    def do(self) -> str:
        return self.command.cmd

    def text(self) -> str:
        """The step as the run's log tells it: ``marker type=credential_shown``."""
        c = self.command
        if isinstance(c, StorageCmd) and c.free_bytes is None:
            return "storage: space freed"
        fields = c.model_dump(mode="json", exclude={"cmd"}, exclude_none=True)
        shown = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if v not in ("", []))
        return f"{self.do} {shown}".strip()


class Target(Protocol):
    """A device a step is for, as far as a step cares."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def cameras(self) -> list[str]: ...


def step_refusal(step: Step, devices: list[Target], badges: set[str]) -> str | None:
    """Why a device named would refuse ``step`` whatever happened before it (a button on a
    room controller, a camera it lacks, an officer the scenario does not know), or None."""
    c = step.command
    rooms = [d for d in devices if d.kind == "room"]
    if step.do in ROOM_ONLY and len(rooms) < len(devices):
        return f"{step.do} is for room controllers (kind = 'room')"
    if rooms and (isinstance(c, Press | Hold) or (isinstance(c, Marker) and c.type is None)):
        return (
            f"{rooms[0].id} is a room controller: it has no buttons "
            "(use open, close or a typed marker)"
        )
    if isinstance(c, CameraCmd) and c.track is not None:
        for d in devices:
            if c.track not in d.cameras:
                return f"{d.id} has no camera {c.track!r} (cameras: {', '.join(d.cameras)})"
    if isinstance(c, Statement) and (unknown := [b for b in c.officers if b not in badges]):
        return f"officers {', '.join(unknown)} are not in [[officers]] (their PINs attest)"
    if isinstance(c, Walk) and not Path(c.route).is_file():
        return f"route {c.route}: no such file"
    return None


def needs_real_time(step: Step) -> str | None:
    """Why ``step`` cannot run in ``--fast`` (no broker, store or processes), or None."""
    c = step.command
    if step.do not in REAL_TIME_VERBS or (isinstance(c, Statement) and c.where == "device"):
        return None
    return REAL_TIME_VERBS[step.do]


def _short(value: object, limit: int = 40) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

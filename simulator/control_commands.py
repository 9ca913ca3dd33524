"""The tester's command vocabulary: what the control channel (:mod:`simulator.control`)
carries out, what a panel button sends (:mod:`simulator.tester_buttons`) and what a
scenario's timeline step does (:mod:`simulator.scenario_steps`: a command, at a time, on
some devices). One pydantic model each, extra fields forbidden, with the device's own
limits (a marker's note: :attr:`evidence.session_bodies.Marker.NOTE_CHARS`), and
:func:`parse_command`, whose error names what is wrong in one line.

Example::

    parse_command(b'{"cmd": "camera", "track": "main", "ok": false}')
    # CameraCmd(cmd='camera', track='main', ok=False)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from agent.session import MarkerType
from common.settings import Category
from evidence.session_bodies import Marker as SealedMarker

PAUSE_REASON_CHARS = 200  # why the officer stopped recording: sealed as the gap's detail


class ControlError(ValueError):
    """A command that cannot be understood or carried out; its text is the reply's error."""


# -- the commands --------------------------------------------------------------------------


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Press(_Cmd):
    cmd: Literal["press"]


class Hold(_Cmd):
    cmd: Literal["hold"]


class CloseCmd(_Cmd):
    cmd: Literal["close"]


class Marker(_Cmd):
    cmd: Literal["marker"]
    type: MarkerType | None = None  # None: the marker button (its configured type)
    note: str = Field("", max_length=SealedMarker.NOTE_CHARS)


class OpenCmd(_Cmd):
    cmd: Literal["open"]
    category: Category | None = None
    badges: list[str] | None = None


class Explain(_Cmd):
    cmd: Literal["explain"]


class Pause(_Cmd):
    cmd: Literal["pause"]
    reason: str = Field("", max_length=PAUSE_REASON_CHARS)


class Resume(_Cmd):
    cmd: Literal["resume"]


class CameraCmd(_Cmd):
    cmd: Literal["camera"]
    track: str | None = None  # None: every camera
    ok: bool = False  # left out: the camera fails


class MicrophoneCmd(_Cmd):
    cmd: Literal["microphone"]
    ok: bool = False


class GpsCmd(_Cmd):
    cmd: Literal["gps"]
    ok: bool = False


class Walk(_Cmd):
    cmd: Literal["walk"]
    route: str = Field(min_length=1, description="an NMEA 0183 file on the device's machine")
    loop: bool = False


class BatteryCmd(_Cmd):
    cmd: Literal["battery"]
    percent: float | None = Field(None, ge=0, le=100)
    drain_per_hour: float | None = Field(None, ge=0, description="percent per hour")
    external: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> BatteryCmd:
        if self.percent is None and self.drain_per_hour is None and self.external is None:
            raise ValueError("give percent, drain_per_hour or external")
        return self


class StorageCmd(_Cmd):
    cmd: Literal["storage"]
    free_bytes: int | None = Field(
        None, ge=0, description="Bytes free from now on; null or left out: the space is back."
    )


class ClockJump(_Cmd):
    cmd: Literal["clock_jump"]
    seconds: float


class NetworkCmd(_Cmd):
    cmd: Literal["network"]
    up: bool


class PanelCmd(_Cmd):
    cmd: Literal["panel"]
    door: Literal["open", "closed"] | None = None
    key: Literal["start", "stop"] | None = None

    @model_validator(mode="after")
    def _one(self) -> PanelCmd:
        if (self.door is None) == (self.key is None):
            raise ValueError("give exactly one of door (open/closed) or key (start/stop)")
        return self


class Status(_Cmd):
    cmd: Literal["status"]


Command = (
    Press
    | Hold
    | CloseCmd
    | Marker
    | OpenCmd
    | Explain
    | Pause
    | Resume
    | CameraCmd
    | MicrophoneCmd
    | GpsCmd
    | Walk
    | BatteryCmd
    | StorageCmd
    | ClockJump
    | NetworkCmd
    | PanelCmd
    | Status
)
ControlCommand = Annotated[Command, Field(discriminator="cmd")]
_ADAPTER: TypeAdapter[ControlCommand] = TypeAdapter(ControlCommand)
COMMANDS: tuple[str, ...] = tuple(
    get_args(model.model_fields["cmd"].annotation)[0] for model in get_args(Command)
)


def parse_command(line: bytes | str | Mapping[str, Any]) -> ControlCommand:
    """One command from a JSON line (or an already decoded object); ControlError says what
    is wrong in one line."""
    if isinstance(line, bytes | str):
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise ControlError(f"not JSON: {e}") from None
    else:
        obj = dict(line)
    if not isinstance(obj, dict):
        raise ControlError('expected a JSON object such as {"cmd": "status"}')
    name = obj.get("cmd")
    if not isinstance(name, str):
        raise ControlError(f'no "cmd" field; one of: {", ".join(COMMANDS)}')
    if name not in COMMANDS:
        raise ControlError(f"unknown command {name[:40]!r}; one of: {', '.join(COMMANDS)}")
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"][1:])  # [0] is the tag
            problems.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
        raise ControlError(f"{name}: {'; '.join(problems)}") from None

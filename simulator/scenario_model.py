"""Scenario files: strict models loaded from TOML, with errors that name the line of thought.

A scenario is a fleet (``[[devices]]``), a timeline of what happens to it
(``[[timeline]]``: button presses, faults, room sessions, power cuts, statements) and what
must be true at the end (``[[expect]]``). Unknown keys are errors, as in device.toml: a
misspelt expectation must not silently pass. See docs/testers-guide.md.

Example::

    scenario = load_scenario(Path("simulator/scenarios/routine-stop.toml"))
    for device in scenario.fleet():
        print(device.id, device.kind)
    needs_real_time(scenario)        # [] if ``sim run --fast`` can run it

The file::

    name = "routine-stop"
    duration = 20

    [[devices]]
    id = "bwc-1"
    badges = ["340102"]

    [[timeline]]
    at = 3
    do = "press"

    [[expect]]
    check = "chain_verifies"
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.session import MarkerType
from common.files import ConfigError, load_toml
from common.settings import Category, DeviceConfig
from evidence.gaps import CAUSES

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
DEFAULT_SETTINGS: dict[str, Any] = {
    # small pictures: twenty recorders encode in real time on two cores
    "recording": {"width": 320, "height": 180, "fps": 10, "prebuffer_seconds": 5},
    "continuity": {"explain_seconds": 3.0},
}


class ScenarioError(ConfigError):
    """A scenario file that cannot be run: missing, not TOML, or a wrong or unknown field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the site and the fleet -------------------------------------------------------------------


class Site(_Strict):
    store_workers: int = Field(1, ge=1, le=8, description="Store workers sharing the uploads.")


class Officer(_Strict):
    badge: str = Field(min_length=1, max_length=32)
    pin: str = Field(min_length=4, max_length=32)


class DeviceSpec(_Strict):
    id: str = Field(
        min_length=1,
        description="Device id; with count > 1 a pattern such as 'bwc-{n:02d}' (n from 1).",
    )
    count: int = Field(1, ge=1, le=100)
    kind: Literal["body", "room"] = "body"
    room: str | None = Field(None, pattern=_NAME, description="The room a controller serves.")
    badges: list[str] = Field(default_factory=list, description="Officers it is assigned to.")
    clock_offset_hours: float = Field(
        0.0, ge=-24 * 30, le=24 * 30, description="Its wall clock is this far off at boot."
    )
    network: bool = Field(True, description="Online at the first boot.")
    route: str | None = Field(None, description="NMEA route walked (relative to this file).")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="device.toml settings the agency installs, over the scenario defaults.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeviceSpec:
        if self.kind == "room" and self.room is None:
            raise ValueError("a room controller needs room = '...'")
        if self.kind == "body" and self.room is not None:
            raise ValueError("room is for kind = 'room' (a room controller)")
        if self.count > 1 and "{n" not in self.id:
            raise ValueError("with count > 1 the id needs {n}, e.g. 'bwc-{n:02d}'")
        try:
            for i in range(1, self.count + 1):
                ident = self.id.format(n=i)
                if not _match(_NAME, ident):
                    raise ValueError(
                        f"device id {ident!r}: 1-63 of a-z 0-9 . _ -, starting with a letter "
                        "or digit"
                    )
        except (KeyError, IndexError) as e:
            raise ValueError(f"id pattern {self.id!r}: only {{n}} may be used ({e})") from None
        self.config()  # the settings must make a valid device.toml
        return self

    def config(self) -> DeviceConfig:
        merged = _merge(DEFAULT_SETTINGS, self.settings)
        if self.route is not None:
            merged = _merge(merged, {"gnss": {"route": self.route}})
        try:
            config = DeviceConfig.model_validate(merged)
        except ValidationError as e:
            raise ValueError(
                "settings: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
                )
            ) from None
        if self.kind == "room" and config.room is None:
            from common.room_settings import Room

            config = config.model_copy(update={"room": Room()})
        return config


@dataclass(frozen=True)
class Device:
    """One device of the fleet (a spec with ``count`` gives several)."""

    id: str
    spec: DeviceSpec

    @property
    def kind(self) -> str:
        return self.spec.kind

    def config(self) -> DeviceConfig:
        return self.spec.config()

    @property
    def cameras(self) -> list[str]:
        room = self.config().room
        return list(room.cameras) if room else ["main"]

    @property
    def tracks(self) -> list[str]:
        return self.config().tracks


# -- the timeline --------------------------------------------------------------------------------


class _Action(_Strict):
    at: float = Field(ge=0, description="Seconds after the start of the scenario.")
    device: str = Field("*", description="A device id or a pattern (fnmatch: bwc-*, *).")


class PressAction(_Action):
    do: Literal["press"]


class HoldAction(_Action):
    do: Literal["hold"]


class CloseAction(_Action):
    do: Literal["close"]


class MarkerAction(_Action):
    do: Literal["marker"]
    type: MarkerType | None = None
    note: str = ""


class OpenAction(_Action):
    do: Literal["open"]
    category: Category | None = None
    badges: list[str] | None = None


class ExplainAction(_Action):
    do: Literal["explain"]


class PauseAction(_Action):
    do: Literal["pause"]
    reason: str = ""


class ResumeAction(_Action):
    do: Literal["resume"]


class CameraAction(_Action):
    do: Literal["camera"]
    track: str | None = None
    ok: bool = False


class MicrophoneAction(_Action):
    do: Literal["microphone"]
    ok: bool = False


class GpsAction(_Action):
    do: Literal["gps"]
    ok: bool = False


class WalkAction(_Action):
    do: Literal["walk"]
    route: str
    loop: bool = False


class BatteryAction(_Action):
    do: Literal["battery"]
    percent: float | None = Field(None, ge=0, le=100)
    drain_per_hour: float | None = Field(None, ge=0)
    external: bool | None = None


class StorageAction(_Action):
    do: Literal["storage"]
    free_bytes: int | None = Field(
        None, ge=0, description="Bytes free from now on; left out: the space is back."
    )


class ClockJumpAction(_Action):
    do: Literal["clock_jump"]
    seconds: float


class NetworkAction(_Action):
    do: Literal["network"]
    up: bool


class PowerCutAction(_Action):
    do: Literal["power_cut"]


class PowerOffAction(_Action):
    do: Literal["power_off"]


class BootAction(_Action):
    do: Literal["boot"]
    clock_offset_hours: float | None = Field(None, ge=-24 * 30, le=24 * 30)
    network: bool | None = None


class DoorAction(_Action):
    do: Literal["door"]
    state: Literal["open", "closed"]


class KeyAction(_Action):
    do: Literal["key"]
    state: Literal["start", "stop"]


class CaseOpenAction(_Action):
    do: Literal["case_open"]
    case: str = Field(min_length=1, max_length=64)
    badges: list[str] = Field(default_factory=list)
    person: str | None = None
    category: Category | None = None


class CaseCloseAction(_Action):
    do: Literal["case_close"]
    case: str = Field(min_length=1, max_length=64)


class StatementAction(_Action):
    do: Literal["statement"]
    reason: str = Field(min_length=1)
    officers: list[str] = Field(min_length=1, description="Badges of the officers attesting.")
    where: Literal["device", "store"] = "device"
    cause: str | None = Field(None, description="Which gap: the last unexplained of this cause.")


Action = Annotated[
    PressAction
    | HoldAction
    | CloseAction
    | MarkerAction
    | OpenAction
    | ExplainAction
    | PauseAction
    | ResumeAction
    | CameraAction
    | MicrophoneAction
    | GpsAction
    | WalkAction
    | BatteryAction
    | StorageAction
    | ClockJumpAction
    | NetworkAction
    | PowerCutAction
    | PowerOffAction
    | BootAction
    | DoorAction
    | KeyAction
    | CaseOpenAction
    | CaseCloseAction
    | StatementAction,
    Field(discriminator="do"),
]

ROOM_ONLY = ("door", "key", "case_open", "case_close")
# Timeline actions that need agent processes, the broker or the store: not in --fast.
REAL_TIME_ACTIONS = {
    "power_cut": "a power cut kills an agent process",
    "network": "the network is the real broker",
    "statement": "(where = 'store') the statement is added at the store",
}


# -- the expectations --------------------------------------------------------------------------


class _Expect(_Strict):
    devices: str = Field("*", description="A device id or a pattern (fnmatch).")


class ChainVerifies(_Expect):
    check: Literal["chain_verifies"]
    strict: bool = Field(False, description="An unexplained gap fails it too.")


class GapExplained(_Expect):
    check: Literal["gap_explained"]
    how: Literal["voice", "written", "any"] = "any"
    cause: str | None = None
    at_least: int = Field(1, ge=0, description="This many such gaps must have happened.")


class UploadedWithin(_Expect):
    check: Literal["uploaded_within_24h"]
    hours: float = Field(24.0, gt=0, le=24 * 30)


class FootageLost(_Expect):
    check: Literal["footage_lost_max_seconds"]
    seconds: float = Field(1.0, ge=0)


class AllTracksPresent(_Expect):
    check: Literal["all_tracks_present"]


class NoSilentGap(_Expect):
    check: Literal["no_silent_gap"]


class Continuous(_Expect):
    check: Literal["continuous"]


class Sessions(_Expect):
    check: Literal["sessions"]
    count: int = Field(ge=0, description="Sessions each matching device recorded.")
    closed: bool = Field(True, description="All of them closed.")


class DeadlineSeen(_Expect):
    check: Literal["deadline_seen"]
    level: Literal["warn", "urgent", "overdue"] = "warn"


class Markers(_Expect):
    check: Literal["markers"]
    type: MarkerType
    at_least: int = Field(1, ge=1)


Expectation = Annotated[
    ChainVerifies
    | GapExplained
    | UploadedWithin
    | FootageLost
    | AllTracksPresent
    | NoSilentGap
    | Continuous
    | Sessions
    | DeadlineSeen
    | Markers,
    Field(discriminator="check"),
]
REAL_TIME_CHECKS = {
    "uploaded_within_24h": "uploads need the broker and the store",
    "deadline_seen": "the deadline level is the uploader's",
    "footage_lost_max_seconds": "power cuts kill agent processes",
}


# -- the scenario ----------------------------------------------------------------------------


class Scenario(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    duration: float = Field(gt=0, le=3600, description="Seconds the timeline runs.")
    sync_timeout: float = Field(
        60.0, ge=0, le=3600, description="After the timeline: how long uploads may take."
    )
    site: Site = Site()
    officers: list[Officer] = Field(default_factory=list)
    devices: list[DeviceSpec] = Field(min_length=1)
    timeline: list[Action] = Field(default_factory=list)
    expect: list[Expectation] = Field(min_length=1, description="A scenario is a test.")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        fleet = self.fleet()
        ids = [d.id for d in fleet]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids repeat: {', '.join(dupes)}")
        by_id = {d.id: d for d in fleet}
        badges = {o.badge for o in self.officers}
        for i, a in enumerate(self.timeline):
            where = f"timeline[{i}] ({a.do} at {a.at:g} s)"
            if a.at > self.duration:
                raise ValueError(f"{where}: after the end (duration = {self.duration:g})")
            matched = [by_id[m] for m in fnmatch.filter(ids, a.device)]
            if not matched:
                raise ValueError(f"{where}: device {a.device!r} matches no device")
            if a.do in ROOM_ONLY and any(d.kind != "room" for d in matched):
                raise ValueError(f"{where}: {a.do} is for room controllers (kind = 'room')")
            if isinstance(a, CameraAction) and a.track is not None:
                for d in matched:
                    if a.track not in d.cameras:
                        raise ValueError(
                            f"{where}: {d.id} has no camera {a.track!r} "
                            f"(cameras: {', '.join(d.cameras)})"
                        )
            if isinstance(a, StatementAction):
                missing = [b for b in a.officers if b not in badges]
                if missing:
                    raise ValueError(
                        f"{where}: officers {', '.join(missing)} are not in [[officers]] "
                        "(their PINs attest)"
                    )
                if a.cause is not None and a.cause not in CAUSES:
                    raise ValueError(f"{where}: unknown cause {a.cause!r}; one of {CAUSES}")
        for i, e in enumerate(self.expect):
            if not fnmatch.filter(ids, e.devices):
                raise ValueError(
                    f"expect[{i}] ({e.check}): devices {e.devices!r} matches no device"
                )
            cause = getattr(e, "cause", None)
            if cause is not None and cause not in CAUSES:
                raise ValueError(f"expect[{i}] ({e.check}): unknown cause {cause!r}")
        return self

    def fleet(self) -> list[Device]:
        out = []
        for spec in self.devices:
            if spec.count == 1 and "{n" not in spec.id:
                out.append(Device(spec.id, spec))
            else:
                out.extend(Device(spec.id.format(n=i), spec) for i in range(1, spec.count + 1))
        return out


def matching(ids: list[str], pattern: str) -> list[str]:
    """The device ids a timeline action or an expectation names (an id or a pattern)."""
    return fnmatch.filter(ids, pattern)


def needs_real_time(scenario: Scenario) -> list[str]:
    """Why the scenario cannot run with ``--fast`` (in-process devices on simulated time,
    no broker, no store); empty if it can."""
    out = []
    for i, a in enumerate(scenario.timeline):
        if a.do in REAL_TIME_ACTIONS and not (
            isinstance(a, StatementAction) and a.where == "device"
        ):
            out.append(f"timeline[{i}] {a.do} at {a.at:g} s: {REAL_TIME_ACTIONS[a.do]}")
    for i, e in enumerate(scenario.expect):
        if e.check in REAL_TIME_CHECKS:
            out.append(f"expect[{i}] {e.check}: {REAL_TIME_CHECKS[e.check]}")
    return out


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file and every problem.
    Route files are resolved against the scenario's folder."""
    path = Path(path)
    return load_toml(
        path,
        Scenario,
        "scenario",
        prepare=lambda data: _resolve_routes(data, path.parent),
        where=_where,
        error=ScenarioError,
    )


def _where(loc: tuple[int | str, ...]) -> str:
    """('timeline', 3, 'press', 'at') → 'timeline[3].at' (the tag is in the message)."""
    parts = list(loc)
    if len(parts) >= 3 and parts[0] in ("timeline", "expect") and isinstance(parts[1], int):
        del parts[2]  # the discriminator's tag
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def _resolve_routes(data: dict[str, Any], base: Path) -> None:
    def resolve(value: object) -> object:
        if isinstance(value, str) and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    for d in data.get("devices", []) if isinstance(data.get("devices"), list) else []:
        if isinstance(d, dict) and "route" in d:
            d["route"] = resolve(d["route"])
    for a in data.get("timeline", []) if isinstance(data.get("timeline"), list) else []:
        if isinstance(a, dict) and a.get("do") == "walk" and "route" in a:
            a["route"] = resolve(a["route"])


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _match(pattern: str, value: str) -> bool:
    import re

    return re.match(pattern, value) is not None

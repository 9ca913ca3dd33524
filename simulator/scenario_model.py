"""Scenario files: strict models loaded from TOML, with errors that name the line of thought.

A scenario is a fleet (``[[devices]]``), a timeline of what happens to it
(``[[timeline]]``: steps, :mod:`simulator.scenario_steps`: the tester's commands and the
runner's power cuts, room sessions and statements) and what must be true at the end
(``[[expect]]``, :mod:`simulator.scenario_expect`). Unknown keys are errors, as in
device.toml: a misspelt expectation must not silently pass. A step a device would refuse
is refused here, naming it. See docs/testers-guide.md.

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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.files import ConfigError, load_toml
from common.settings import DeviceConfig
from simulator import scenario_steps
from simulator.scenario_expect import REAL_TIME_CHECKS, Expectation
from simulator.scenario_steps import Step, step_refusal

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
        return config.for_room_controller() if self.kind == "room" else config


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
    timeline: list[Step] = Field(default_factory=list)
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
        for i, step in enumerate(self.timeline):
            where = f"timeline[{i}] ({step.do} at {step.at:g} s)"
            if step.at > self.duration:
                raise ValueError(f"{where}: after the end (duration = {self.duration:g})")
            matched = [by_id[m] for m in fnmatch.filter(ids, step.device)]
            if not matched:
                raise ValueError(f"{where}: device {step.device!r} matches no device")
            if refusal := step_refusal(step, list(matched), badges):
                raise ValueError(f"{where}: {refusal}")
        for i, e in enumerate(self.expect):
            if not fnmatch.filter(ids, e.devices):
                raise ValueError(
                    f"expect[{i}] ({e.check}): devices {e.devices!r} matches no device"
                )
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
    for i, step in enumerate(scenario.timeline):
        if why := scenario_steps.needs_real_time(step):
            out.append(f"timeline[{i}] {step.do} at {step.at:g} s: {why}")
    for i, e in enumerate(scenario.expect):
        if e.check in REAL_TIME_CHECKS:
            out.append(f"expect[{i}] {e.check}: {REAL_TIME_CHECKS[e.check]}")
    return out


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file and every problem.
    Route files are resolved against the scenario's folder."""
    path = Path(path)
    read: dict[str, Any] = {}

    def prepare(data: dict[str, Any]) -> None:
        _resolve_routes(data, path.parent)
        read.update(data)

    return load_toml(
        path,
        Scenario,
        "scenario",
        prepare=prepare,
        where=lambda loc: _where(loc, read),
        error=ScenarioError,
    )


def _where(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """('timeline', 3, 'command', 'marker', 'note') → 'timeline[3].note (marker at 5 s)':
    the step's field, and the step as the file says it; an expectation's tag is in the
    message."""
    parts, step = list(loc), ""
    if len(parts) >= 3 and parts[0] == "expect" and isinstance(parts[1], int):
        del parts[2]  # the discriminator's tag
    if len(parts) >= 2 and parts[0] == "timeline" and isinstance(parts[1], int):
        if parts[2:3] == ["command"]:
            del parts[2:4]  # the step's command and its tag: the fields are the step's
        step = _step_said(data, parts[1])
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return (out or "(top)") + step


def _step_said(data: dict[str, Any], i: int) -> str:
    """`` (marker at 5 s)``: what the file's step ``i`` does and when, as far as it says."""
    steps = data.get("timeline")
    step = steps[i] if isinstance(steps, list) and i < len(steps) else None
    if not isinstance(step, dict) or not isinstance(step.get("do"), str):
        return ""
    at = step.get("at")
    when = f" at {at:g} s" if isinstance(at, int | float) and not isinstance(at, bool) else ""
    return f" ({step['do'][:40]}{when})"


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

"""What a scenario run leaves behind, as plain facts.

Pure: no processes, sockets or files. The runner (:mod:`simulator.scenario`) collects the
facts (:mod:`simulator.scenario_collect`); :mod:`simulator.scenario_checks` judges each
expectation on them; the report (:mod:`simulator.timeline_report`) draws them. Times are
*scenario seconds* (0 is the start of the timeline) unless a name says ``wall`` (a
device's own clock) or ``stored_at`` (the store's clock).

Example::

    facts = RunFacts("routine-stop", "real time", duration=20, ended=24, wall0=...)
    facts.devices["bwc-1"] = DeviceFacts("bwc-1", "body", ["main"], ...)
    scenario_time(wall, offsets=[(0.0, 0.0)], wall0=facts.wall0)   # scenario seconds
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
LEVELS = ("ok", "warn", "urgent", "overdue")  # the 24-hour rule's deadline levels, in order


@dataclass
class SegmentFact:
    session: str
    track: str
    index: int
    start: float
    end: float
    end_wall: float  # the device's clock: what the 24-hour rule counts from
    sealed: float
    prebuffer: bool = False
    recovered: bool = False
    stored_at: float | None = None  # the store's clock, from the signed receipt
    receipt_t: float | None = None  # scenario seconds of the receipt

    @property
    def upload_hours(self) -> float | None:
        """Hours from the end of this footage (device clock) to the store's receipt."""
        return None if self.stored_at is None else (self.stored_at - self.end_wall) / HOUR


@dataclass
class GapFact:
    id: str
    session: str
    cause: str
    start: float
    end: float | None  # None: recording never resumed
    length: float | None
    affects: list[str] = field(default_factory=list)
    tracks: list[str] = field(default_factory=list)  # empty: every track
    explanation: str | None = None  # voice, written, or None
    where: str | None = None  # device (in its chain) or store (added at the agency)
    detail: str = ""


@dataclass
class MarkerFact:
    t: float
    type: str
    note: str
    session: str | None


@dataclass
class SessionFact:
    id: str
    opened: float | None
    closed: float | None
    category: str | None = None
    badges: list[str] = field(default_factory=list)
    room: str | None = None
    case: str | None = None
    tracks: dict[str, int] = field(default_factory=dict)  # segments per track


@dataclass
class CutFact:
    t: float
    wall: float  # the device's clock at the cut
    session: str | None  # the session it cut into (None: no session was open)
    lost: float | None = None  # seconds of footage it cost


@dataclass
class Sample:
    """The device's status, asked every second or so during the run."""

    t: float
    state: str
    session: str | None = None
    deadline: str = "ok"
    indicator: str = "off"
    interrupted: list[str] = field(default_factory=list)
    battery: float | None = None
    network: bool | None = None
    connected: bool | None = None
    segments: int = 0
    receipted: int = 0


@dataclass
class ActionRecord:
    at: float  # planned
    t: float  # carried out
    device: str
    do: str
    ok: bool
    detail: str = ""


@dataclass
class DeviceFacts:
    id: str
    kind: str
    tracks: list[str]
    verify_ok: bool = True
    problems: list[dict[str, Any]] = field(default_factory=list)  # verify: code, where, message
    sessions: list[SessionFact] = field(default_factory=list)
    segments: list[SegmentFact] = field(default_factory=list)
    gaps: list[GapFact] = field(default_factory=list)
    markers: list[MarkerFact] = field(default_factory=list)
    cuts: list[CutFact] = field(default_factory=list)
    cut_problems: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    boots: list[float] = field(default_factory=list)
    shutdowns: list[tuple[float, str]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)  # gnss_lost, storage_warning…

    @property
    def deadline_levels(self) -> list[str]:
        return sorted({s.deadline for s in self.samples}, key=level_rank)


@dataclass
class RunFacts:
    scenario: str
    mode: str  # "real time" or "fast"
    duration: float  # of the timeline
    ended: float  # scenario seconds when the run ended (after waiting for uploads)
    wall0: float  # the real wall clock at scenario second 0
    devices: dict[str, DeviceFacts] = field(default_factory=dict)
    actions: list[ActionRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0  # how long the run took


@dataclass(frozen=True)
class Outcome:
    index: int
    name: str  # e.g. "gap_explained (bwc-1, voice)"
    ok: bool
    detail: str


# -- time -----------------------------------------------------------------------------------


def scenario_time(wall: float, offsets: Sequence[tuple[float, float]], wall0: float) -> float:
    """A device's wall-clock reading as scenario seconds. ``offsets``: (from scenario second,
    device wall clock minus real wall clock), in order; the first holds from the start.
    A reading that fits no period (around a forward jump) goes to the nearest one."""
    if not offsets:
        return wall - wall0
    best: tuple[float, float] | None = None
    for i, (t_from, off) in enumerate(offsets):
        lo = -math.inf if i == 0 else t_from
        hi = offsets[i + 1][0] if i + 1 < len(offsets) else math.inf
        t = wall - wall0 - off
        if lo <= t < hi:
            return t
        near = min(max(t, lo), hi)
        if best is None or abs(near - t) < best[0]:
            best = (abs(near - t), near)
    assert best is not None
    return best[1]


def level_rank(level: str) -> int:
    """Where a deadline level stands among :data:`LEVELS` (an unknown one: as ``ok``)."""
    return LEVELS.index(level) if level in LEVELS else 0

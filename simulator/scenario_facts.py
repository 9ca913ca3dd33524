"""What a scenario run leaves behind, as plain facts, and the expectations judged on them.

Pure: no processes, sockets or files. The runner (:mod:`simulator.scenario`) collects the
facts (:mod:`simulator.scenario_collect`); :func:`check` decides each expectation; the
report (:mod:`simulator.timeline_report`) draws them. Times are *scenario seconds* (0 is
the start of the timeline) unless a name says ``wall`` (a device's own clock) or
``stored_at`` (the store's clock).

Example::

    facts = RunFacts("routine-stop", "real time", duration=20, ended=24, wall0=...)
    facts.devices["bwc-1"] = DeviceFacts("bwc-1", "body", ["main"], ...)
    for outcome in check_all(scenario.expect, facts):
        print(outcome.ok, outcome.name, outcome.detail)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.scenario_model import (
    AllTracksPresent,
    ChainVerifies,
    Continuous,
    DeadlineSeen,
    Expectation,
    FootageLost,
    GapExplained,
    Markers,
    NoSilentGap,
    Sessions,
    UploadedWithin,
    matching,
)

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
        return sorted({s.deadline for s in self.samples}, key=_level)


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


# -- expectations ----------------------------------------------------------------------------


def check_all(expectations: Iterable[Expectation], facts: RunFacts) -> list[Outcome]:
    return [check(e, facts, i) for i, e in enumerate(expectations)]


def check(e: Expectation, facts: RunFacts, index: int = 0) -> Outcome:
    """Judge one expectation; the detail says why, with device ids and scenario times."""
    devices = [facts.devices[i] for i in matching(sorted(facts.devices), e.devices)]
    name = f"{e.check} ({e.devices})"
    if not devices:
        return Outcome(index, name, False, f"no device matches {e.devices!r}")
    if isinstance(e, ChainVerifies):
        ok, detail = _chain(devices, e.strict)
    elif isinstance(e, GapExplained):
        name = f"{e.check} ({e.devices}, {e.how}{', ' + e.cause if e.cause else ''})"
        ok, detail = _gaps_explained(devices, e)
    elif isinstance(e, UploadedWithin):
        name = f"{e.check} ({e.devices}, {e.hours:g} h)"
        ok, detail = _uploaded(devices, e.hours)
    elif isinstance(e, FootageLost):
        name = f"{e.check} ({e.devices}, {e.seconds:g} s)"
        ok, detail = _footage(devices, e.seconds)
    elif isinstance(e, AllTracksPresent):
        ok, detail = _tracks(devices)
    elif isinstance(e, NoSilentGap):
        ok, detail = _silent(devices)
    elif isinstance(e, Continuous):
        ok, detail = _continuous(devices)
    elif isinstance(e, Sessions):
        name = f"{e.check} ({e.devices}, {e.count}{' closed' if e.closed else ''})"
        ok, detail = _sessions(devices, e.count, e.closed)
    elif isinstance(e, DeadlineSeen):
        name = f"{e.check} ({e.devices}, {e.level})"
        ok, detail = _deadline(devices, e.level)
    elif isinstance(e, Markers):
        name = f"{e.check} ({e.devices}, {e.type.value} x{e.at_least})"
        ok, detail = _markers(devices, e.type.value, e.at_least)
    else:  # pragma: no cover - the model admits no other
        raise AssertionError(e)
    return Outcome(index, name, ok, detail)


def _chain(devices: list[DeviceFacts], strict: bool) -> tuple[bool, str]:
    """What ``unbroken verify`` finds; ``strict``: an unexplained gap fails too — judged
    with statements added at the agency, which the device's own chain does not hold."""
    bad = []
    for d in devices:
        for p in d.problems:
            if p["code"] != "unexplained_gap":
                bad.append(f"{d.id}: {p['code']} at {p['where']}: {p['message']}")
        if strict:
            bad += [f"{d.id}: {_gap_text(g)}: UNEXPLAINED" for g in d.gaps if not g.explanation]
    if bad:
        return False, _few(bad)
    entries = sum(len(d.segments) for d in devices)
    return True, f"{len(devices)} device(s), {entries} segments sealed, every check passes"


def gap_matches(g: GapFact, how: str) -> bool:
    if how == "any":
        return g.explanation is not None
    return g.explanation == how


def _gaps_explained(devices: list[DeviceFacts], e: GapExplained) -> tuple[bool, str]:
    gaps = [(d.id, g) for d in devices for g in d.gaps if e.cause in (None, g.cause)]
    what = f"{e.cause} gap" if e.cause else "gap"
    if len(gaps) < e.at_least:
        return False, f"expected at least {e.at_least} {what}(s), found {len(gaps)}"
    bad = [
        f"{dev}: {_gap_text(g)}: {g.explanation or 'UNEXPLAINED'}"
        for dev, g in gaps
        if not gap_matches(g, e.how)
    ]
    if bad:
        return False, _few(bad)
    if not gaps:
        return True, f"no {what} to explain"
    return True, "; ".join(
        f"{dev}: {_gap_text(g)}: {g.explanation}{' (at the agency)' if g.where == 'store' else ''}"
        for dev, g in gaps[:4]
    ) + (f"; and {len(gaps) - 4} more" if len(gaps) > 4 else "")


def _gap_text(g: GapFact) -> str:
    length = "never resumed" if g.length is None else f"{g.length:.1f} s"
    on = f" on {','.join(g.tracks)}" if g.tracks else ""
    return f"{g.cause}{on} at {g.start:.1f} s ({length})"


def _uploaded(devices: list[DeviceFacts], hours: float) -> tuple[bool, str]:
    segs = [(d.id, s) for d in devices for s in d.segments]
    if not segs:
        return False, "nothing was recorded: no segment to upload"
    missing = [
        f"{dev}: {s.track} segment {s.index} of {s.session[:8]}"
        for dev, s in segs
        if s.stored_at is None
    ]
    late = [
        f"{dev}: {s.track} segment {s.index} stored {s.upload_hours:.1f} h after recording"
        for dev, s in segs
        if s.upload_hours is not None and s.upload_hours > hours
    ]
    if missing or late:
        head = f"{len(missing)} of {len(segs)} segments without a receipt" if missing else ""
        return False, _few(([head] if head else []) + missing[:5] + late)
    worst = max(s.upload_hours or 0.0 for _, s in segs)
    return True, (
        f"{len(segs)} segments on {len(devices)} device(s) receipted; the slowest "
        f"{_hours(worst)} after its recording ended"
    )


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 0.1 else f"{h * 3600:.1f} s"


def _footage(devices: list[DeviceFacts], seconds: float) -> tuple[bool, str]:
    cuts = [(d.id, c) for d in devices for c in d.cuts if c.session is not None]
    problems = [f"{d.id}: {p}" for d in devices for p in d.cut_problems]
    if problems:
        return False, _few(problems)
    if not cuts:
        return False, "no power cut happened inside a session: nothing to judge"
    bad = [
        f"{dev}: cut at {c.t:.1f} s lost {c.lost:.2f} s"
        for dev, c in cuts
        if c.lost is None or c.lost > seconds
    ]
    if bad:
        return False, _few(bad)
    worst = max(c.lost or 0.0 for _, c in cuts)
    return True, f"{len(cuts)} power cut(s) inside sessions; the worst lost {worst:.2f} s"


def _tracks(devices: list[DeviceFacts]) -> tuple[bool, str]:
    bad, n = [], 0
    for d in devices:
        for s in d.sessions:
            n += 1
            counts = {t: s.tracks.get(t, 0) for t in d.tracks}
            absent = [t for t, c in counts.items() if c == 0]
            if absent:
                bad.append(f"{d.id}: session {s.id[:8]} has no segment on {', '.join(absent)}")
            elif len(set(counts.values())) > 1:
                shown = ", ".join(f"{t} {c}" for t, c in counts.items())
                bad.append(f"{d.id}: session {s.id[:8]} tracks differ: {shown}")
    if not n:
        return False, "no session was recorded"
    if bad:
        return False, _few(bad)
    tracks = sorted({t for d in devices for t in d.tracks})
    return True, f"{n} session(s), each with segments on every track ({', '.join(tracks)})"


def _silent(devices: list[DeviceFacts]) -> tuple[bool, str]:
    bad = [
        f"{d.id}: {p['where']}: {p['message']}"
        for d in devices
        for p in d.problems
        if p["code"] == "silent_gap"
    ]
    if bad:
        return False, _few(bad)
    gaps = sum(len(d.gaps) for d in devices)
    sessions = sum(len(d.sessions) for d in devices)
    if not sessions:
        return False, "no session was recorded"
    return True, f"{sessions} session(s); every one of {gaps} gap(s) logged with its cause"


def _continuous(devices: list[DeviceFacts]) -> tuple[bool, str]:
    sessions = [(d.id, s) for d in devices for s in d.sessions]
    if not sessions:
        return False, "no session was recorded"
    bad = [f"{d.id}: {_gap_text(g)}" for d in devices for g in d.gaps]
    if bad:
        return False, _few(bad)
    return True, f"{len(sessions)} session(s) without a gap"


def _sessions(devices: list[DeviceFacts], count: int, closed: bool) -> tuple[bool, str]:
    bad = []
    for d in devices:
        if len(d.sessions) != count:
            bad.append(f"{d.id}: {len(d.sessions)} session(s), expected {count}")
        still_open = [s.id[:8] for s in d.sessions if s.closed is None]
        if closed and still_open:
            bad.append(f"{d.id}: session(s) {', '.join(still_open)} never closed")
    if bad:
        return False, _few(bad)
    return True, f"{len(devices)} device(s) with {count} session(s) each" + (
        ", all closed" if closed else ""
    )


def _deadline(devices: list[DeviceFacts], level: str) -> tuple[bool, str]:
    bad, seen = [], []
    for d in devices:
        worst = max((s.deadline for s in d.samples), key=_level, default="ok")
        seen.append(f"{d.id}: {worst}")
        if _level(worst) < _level(level):
            bad.append(f"{d.id}: the deadline level reached only {worst!r}, not {level!r}")
    if bad:
        return False, _few(bad)
    return True, "; ".join(seen[:4]) + (f"; and {len(seen) - 4} more" if len(seen) > 4 else "")


def _markers(devices: list[DeviceFacts], kind: str, at_least: int) -> tuple[bool, str]:
    bad, n = [], 0
    for d in devices:
        k = sum(m.type == kind for m in d.markers)
        n += k
        if k < at_least:
            bad.append(f"{d.id}: {k} {kind} marker(s), expected at least {at_least}")
    if bad:
        return False, _few(bad)
    return True, f"{n} {kind} marker(s) on {len(devices)} device(s)"


def _level(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 0


def _few(items: list[str], limit: int = 6) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")

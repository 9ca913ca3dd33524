"""Interruptions inside a session and their spoken explanations: decisions only, no I/O.

The recorder reports faults as they start and clear; this tracker decides when a gap opens
and closes, and when recording that resumed must be explained. By default the first
``explain_seconds`` after resuming are the explanation (the officer is prompted by LED and
buzzer and speaks); in ``button`` mode the officer presses the explain control first, and
a gap with no press within ``explain_timeout`` stays unexplained.

Example::

    t = InterruptionTracker(explain_seconds=10)
    t.fault("camera", at=m1, affects=["video"])     # -> Started(...)  seal "interruption"
    t.clear("camera", at=m2)                        # -> Ended(...)    seal "interruption_end"
    t.tick(at=m3)                                   # -> [Explained(...)] after 10 s
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from evidence.seal import Moment


@dataclass(frozen=True)
class Started:
    id: str
    cause: str
    start: Moment
    affects: list[str]
    detail: str = ""
    tracks: tuple[str, ...] = ()  # the tracks interrupted; none named: all


def fault_key(cause: str, tracks: tuple[str, ...] = ()) -> str:
    """One active interruption per cause and tracks: a room's two cameras fail apart."""
    return f"{cause}@{','.join(tracks)}" if tracks else cause


@dataclass(frozen=True)
class Ended:
    id: str
    cause: str
    end: Moment


@dataclass(frozen=True)
class Explained:
    id: str
    start: Moment
    end: Moment


@dataclass
class _Pending:
    id: str
    resumed: Moment
    clip_start: Moment | None = None


@dataclass
class InterruptionTracker:
    explain_seconds: float = 10.0
    mode: Literal["auto", "button"] = "auto"
    explain_timeout: float = 120.0
    active: dict[str, Started] = field(default_factory=dict)  # by fault_key
    pending: list[_Pending] = field(default_factory=list)  # resumed, awaiting explanation
    unexplained: list[str] = field(default_factory=list)  # ids whose chance passed

    def fault(
        self,
        cause: str,
        at: Moment,
        affects: list[str],
        detail: str = "",
        tracks: tuple[str, ...] = (),
    ) -> Started | None:
        """A fault is present; a new interruption if it was not already active."""
        key = fault_key(cause, tracks)
        if key in self.active:
            return None
        s = Started(str(uuid.uuid4()), cause, at, affects, detail, tracks)
        self.active[key] = s
        return s

    def clear(self, cause: str, at: Moment, tracks: tuple[str, ...] = ()) -> Ended | None:
        """The fault is gone and recording resumed: the gap ends, its explanation is due."""
        s = self.active.pop(fault_key(cause, tracks), None)
        if s is None:
            return None
        p = _Pending(s.id, at)
        if self.mode == "auto":
            p.clip_start = at
        self.pending.append(p)
        return Ended(s.id, cause, at)

    def resumed_after(self, started: Started, at: Moment) -> Ended:
        """A gap that was found already over (power loss found at boot): due now."""
        self.active[fault_key(started.cause, started.tracks)] = started
        ended = self.clear(started.cause, at, started.tracks)
        assert ended
        return ended

    def ended_at_boot(self, gap_id: str, at: Moment) -> None:
        """A gap sealed open before a shutdown inside the session (battery) ends at this
        boot: its explanation is due now."""
        self.pending.append(_Pending(gap_id, at, at if self.mode == "auto" else None))

    def explain_pressed(self, at: Moment) -> bool:
        """The explain control: the oldest gap waiting for a voice explanation gets it."""
        for p in self.pending:
            if p.clip_start is None:
                p.clip_start = at
                return True
        return False

    @property
    def prompting(self) -> bool:
        """Whether the officer should be prompted (LED/buzzer) to explain."""
        return bool(self.pending)

    def tick(self, at: Moment) -> list[Explained]:
        """Time passes: clips that have run their length are explanations; unpressed gaps
        past the timeout stay unexplained."""
        done: list[Explained] = []
        keep: list[_Pending] = []
        for p in self.pending:
            if p.clip_start is not None and at.mono - p.clip_start.mono >= self.explain_seconds:
                done.append(Explained(p.id, p.clip_start, at))
            elif p.clip_start is None and at.mono - p.resumed.mono > self.explain_timeout:
                self.unexplained.append(p.id)
            else:
                keep.append(p)
        self.pending = keep
        return done

    def session_closing(self, at: Moment) -> list[Explained]:
        """The session ends: a clip being spoken ends with it; anything else stays as is
        (a gap still active when the session ends needs a written statement)."""
        done = [Explained(p.id, p.clip_start, at) for p in self.pending if p.clip_start]
        self.unexplained += [p.id for p in self.pending if p.clip_start is None]
        self.pending = []
        self.active = {}
        return done

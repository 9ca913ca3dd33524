"""Keeping real time on a machine that cannot: decisions only, no I/O, no clock of its own.

Two questions each frame, answered from the recorder's clock:

- **Was time lost?** A segment's footage ends at its first frame's time plus its frames at
  the recording's rate. A frame taken more than ``lost_seconds`` after that (the loop
  stalled, or fell behind frame by frame) means the time between was never recorded: it
  is sealed as an ``overload`` interruption, like any other gap (:func:`time_lost`).
- **Should the load step down, or back up?** The frames' work, as a share of the frame
  interval and averaged over about a second, is watched by :class:`LoadGovernor`: at or
  above ``busy_high`` for ``down_seconds`` it steps down (a lower bitrate, then fewer
  pictures a second); lost time steps down at once. At or below ``busy_low`` for
  ``up_seconds`` it steps back up; a step up undone within that long doubles the wait,
  so a machine on the edge does not swing between steps.

Example::

    gov = LoadGovernor(config.recording.overload, fps=30, bitrate=2_000_000)
    gov.frame(work=0.031, at=12.0)       # None, or a LoadChange to seal as an event
    gov.hold, gov.bitrate                # what the recorder does now
    time_lost(footage_end=10.0, taken=10.4, limit=0.25)     # 0.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.recording_settings import Overload
from evidence.entries import Event

SMOOTHING_SECONDS = 1.0  # the work share is an average over about this long
MAX_SHARE = 2.0  # one frame's work counts as no more than this many frame intervals
MAX_BACKOFF = 8  # a step up is never retried later than this many times up_seconds


def time_lost(footage_end: float, taken: float, limit: float) -> float:
    """Seconds lost before a frame ``taken`` at that monotonic time, when the footage
    kept so far ends at ``footage_end``; 0 when it is no more than ``limit`` late."""
    late = taken - footage_end
    return late if late > limit else 0.0


@dataclass(frozen=True)
class LoadChange:
    """A step taken: the level now (0: as configured), what it records at, and why."""

    level: int
    bitrate: int
    picture_rate: float  # pictures a second: fps / hold
    busy: float  # the averaged share of the frame interval the work took
    reason: Literal["busy", "lost_time", "spare"]

    @property
    def reduced(self) -> bool:
        """Whether this change stepped down (else back up)."""
        return self.reason != "spare"

    def event(self) -> Event:
        """The chain's ``event``: a court sees the picture rate and bitrate change."""
        return Event(
            "load_reduced" if self.reduced else "load_restored",
            {
                "level": self.level,
                "bitrate": self.bitrate,
                "picture_rate": round(self.picture_rate, 3),
                "busy": round(self.busy, 3),
                "reason": self.reason,
            },
        )


class LoadGovernor:
    """Steps the recorder's load down and back up, with hysteresis (see the module)."""

    def __init__(self, settings: Overload, fps: int, bitrate: int) -> None:
        self.settings = settings
        self.fps = fps
        self.full_bitrate = bitrate  # as configured: level 0
        self.level = 0
        self.busy = 0.0  # the averaged share of the frame interval the work takes
        self._alpha = min(1.0, 1.0 / (fps * SMOOTHING_SECONDS))
        self._high_since: float | None = None
        self._low_since: float | None = None
        self._up_wait = settings.up_seconds
        self._stepped_up_at: float | None = None

    @property
    def hold(self) -> int:
        """Frames each picture is kept for (1: a new picture every frame)."""
        return self.settings.steps[self.level - 1].hold if self.level else 1

    @property
    def bitrate(self) -> int:
        if not self.level:
            return self.full_bitrate
        return min(self.full_bitrate, self.settings.steps[self.level - 1].bitrate)

    def frame(self, work: float, at: float) -> LoadChange | None:
        """A frame's work took ``work`` seconds, ending at monotonic ``at``."""
        # a frame that took more than MAX_SHARE intervals (a stall) counts as that many:
        # one stall is lost time, not load
        self.busy += self._alpha * (min(work * self.fps, MAX_SHARE) - self.busy)
        s = self.settings
        if self.busy >= s.busy_high and self.level < len(s.steps):
            self._low_since = None
            self._high_since = at if self._high_since is None else self._high_since
            if at - self._high_since >= s.down_seconds:
                return self._down(at, "busy")
        elif self.busy <= s.busy_low and self.level > 0:
            self._high_since = None
            self._low_since = at if self._low_since is None else self._low_since
            if at - self._low_since >= self._up_wait:
                return self._up(at)
        else:
            self._high_since = self._low_since = None
        return None

    def lost(self, at: float) -> LoadChange | None:
        """Time was lost: a step down at once, unless already at the last one."""
        if self.level >= len(self.settings.steps):
            return None
        return self._down(at, "lost_time")

    def _down(self, at: float, reason: Literal["busy", "lost_time"]) -> LoadChange:
        if self._stepped_up_at is not None and at - self._stepped_up_at < self._up_wait:
            # the step up did not hold: wait longer before the next one
            self._up_wait = min(self._up_wait * 2, self.settings.up_seconds * MAX_BACKOFF)
        self._stepped_up_at = None
        self.level += 1
        return self._changed(reason)

    def _up(self, at: float) -> LoadChange:
        self.level -= 1
        self._stepped_up_at = at
        return self._changed("spare")

    def _changed(self, reason: Literal["busy", "lost_time", "spare"]) -> LoadChange:
        self._high_since = self._low_since = None
        return LoadChange(self.level, self.bitrate, self.fps / self.hold, self.busy, reason)

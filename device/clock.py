"""The clock port: wall time for people, monotonic time for ordering.

Segments are ordered and timed by the monotonic clock; the wall clock is what the watermark
and manifests show, together with whether it was synchronised (NTP/GNSS) at the time.

Example::

    clock = SimClock(wall_start=1_773_451_800.0)
    clock.advance(2.5)          # tests and fast simulation move time themselves
    clock.jump_wall(+3600)      # a wall-clock jump; monotonic time is unaffected
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the Unix epoch, UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""

    def synced(self) -> bool:
        """Whether the wall clock is believed correct (NTP or GNSS disciplined)."""

    def utc_offset(self) -> int:
        """Local offset from UTC in seconds, for the watermark."""


class SystemClock:
    """The machine's clocks. ``synced`` asks the kernel whether NTP disciplines the clock."""

    def __init__(self, utc_offset: int | None = None) -> None:
        self._offset = utc_offset

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def synced(self) -> bool:
        # adjtimex is not exposed by the stdlib; systemd-timesyncd leaves this flag file.
        import os

        return os.path.exists("/run/systemd/timesync/synchronized")

    def utc_offset(self) -> int:
        if self._offset is not None:
            return self._offset
        return -time.altzone if time.localtime().tm_isdst > 0 else -time.timezone


class OffsetClock(SystemClock):
    """The machine's clocks, with the wall clock ``offset`` seconds off and able to jump,
    as a misset RTC or a bad NTP answer would make it: what a simulated device in real
    time runs on (one that "recorded 20 hours ago", or whose clock a tester jumps)."""

    def __init__(self, offset: float = 0.0, utc_offset: int | None = None) -> None:
        super().__init__(utc_offset)
        self.offset = float(offset)

    def wall(self) -> float:
        return time.time() + self.offset

    def jump_wall(self, seconds: float) -> None:
        self.offset += seconds


class JumpingClock(Clock, Protocol):
    """A clock whose wall time a tester can step (SimClock, OffsetClock)."""

    def jump_wall(self, seconds: float) -> None: ...


class SimClock:
    """A clock that moves only when told, so tests and fast simulation control time."""

    def __init__(
        self,
        wall_start: float = 1_773_451_800.0,  # 2026-03-14 01:30:00 UTC, the shipped route's start
        utc_offset: int = 8 * 3600,
        synced: bool = True,
    ) -> None:
        self._mono = 1000.0
        self._wall_minus_mono = wall_start - self._mono
        self._offset = utc_offset
        self._synced = synced

    def wall(self) -> float:
        return self._mono + self._wall_minus_mono

    def monotonic(self) -> float:
        return self._mono

    def synced(self) -> bool:
        return self._synced

    def utc_offset(self) -> int:
        return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("monotonic time cannot go back")
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        self._wall_minus_mono += seconds

    def set_synced(self, synced: bool) -> None:
        self._synced = synced

"""The GNSS port: what a receiver tells the recorder, and how the watermark shows it.

A receiver is polled: ``state()`` never blocks and returns the most recent valid fix together
with whether the receiver has a fix *now*. A fix loss keeps the last fix, so the watermark can
say how old the last known position is instead of showing nothing. The backends are
:mod:`device.nmea_replay` (a recorded route, and the simulator's receiver), :mod:`device.gpsd`
and :mod:`device.nmea_serial` (real receivers), and :class:`NoGnss` here (no receiver).

Example::

    clock = SimClock()
    gnss = NmeaReplay("simulator/routes/hefei-foot-patrol.nmea", clock)
    clock.advance(310)                      # into the underpass
    state = gnss.state()                    # has_fix False, last_fix from 01:34:59 UTC
    format_position(state, clock.monotonic())   # "NO FIX 11s"
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Fix:
    lat: float  # decimal degrees, north positive
    lon: float  # decimal degrees, east positive
    alt: float | None  # metres above mean sea level
    fix_time: float  # UTC epoch seconds of the fix as the receiver reported it
    received: float  # clock.monotonic() when we got it
    satellites: int | None
    hdop: float | None


@dataclass(frozen=True)
class GnssState:
    last_fix: Fix | None  # the most recent valid fix, kept across a fix loss
    has_fix: bool  # whether the receiver currently has a fix

    def age(self, now_monotonic: float) -> float | None:
        """Seconds since the last fix was received, ``None`` if there never was one."""
        if self.last_fix is None:
            return None
        return now_monotonic - self.last_fix.received


class Gnss(Protocol):
    def state(self) -> GnssState:
        """The current state; non-blocking, consumes whatever data is due or available."""

    def close(self) -> None: ...


def format_position(state: GnssState, now_monotonic: float, no_fix_label: str = "NO FIX") -> str:
    """The watermark's position text: ``31.820603N 117.227213E``, or ``NO FIX 12s``."""
    fix = state.last_fix
    if state.has_fix and fix is not None:
        ns = "N" if fix.lat >= 0 else "S"
        ew = "E" if fix.lon >= 0 else "W"
        return f"{abs(fix.lat):.6f}{ns} {abs(fix.lon):.6f}{ew}"
    age = state.age(now_monotonic)
    if age is None:
        return no_fix_label
    # Half-up rather than round()'s half-even, so the shown age never steps backwards.
    return f"{no_fix_label} {math.floor(max(0.0, age) + 0.5)}s"


class NoGnss:
    """No receiver (an interview room): never a fix, so positions read 'no fix'."""

    def state(self) -> GnssState:
        return GnssState(last_fix=None, has_fix=False)

    def close(self) -> None:
        pass

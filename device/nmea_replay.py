"""Replaying a recorded route: :class:`NmeaReplay` plays an NMEA file against a clock, and
:class:`SimGnss` is the simulator's receiver walking such a route, with a tester's switches.

Example::

    clock = SimClock()
    gnss = SimGnss("simulator/routes/hefei-foot-patrol.nmea", clock)
    clock.advance(60)
    gnss.state().has_fix        # True: a minute along the route
    gnss.lose()                 # an underpass: no fix, the last one kept and ageing
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device.clock import Clock
from device.gnss import Fix, GnssState
from device.nmea import Sentence, decode_sentence, utc_midnight


@dataclass(frozen=True)
class _Timed:
    due: float  # route seconds after the first timestamp; never decreases along the file
    fix_time: float | None  # UTC epoch of the sentence's own timestamp
    sentence: Sentence


class SimGnss:
    """A simulated receiver walking a route (:class:`NmeaReplay`), with a tester's switches:
    ``lose()`` blinds it (no fix, the last one kept and ageing, as in an underpass) until
    ``lose(False)``; ``walk(route)`` sends it along another route from now on."""

    def __init__(self, route: str | Path, clock: Clock, loop: bool = True) -> None:
        self._clock = clock
        self._replay = NmeaReplay(route, clock, loop=loop)
        self._lost = False
        self._kept: Fix | None = None  # the last fix before the receiver was blinded

    @property
    def lost(self) -> bool:
        return self._lost

    def lose(self, lost: bool = True) -> None:
        if lost and not self._lost:
            self._kept = self._replay.state().last_fix
        self._lost = lost

    def walk(self, route: str | Path, loop: bool = False) -> None:
        self._replay = NmeaReplay(route, self._clock, loop=loop)

    def state(self) -> GnssState:
        st = self._replay.state()  # the route goes on while the receiver is blind
        return GnssState(self._kept, False) if self._lost else st

    def close(self) -> None:
        self._replay.close()


class NmeaReplay:
    """Replays an NMEA 0183 file (GGA and RMC) against a :class:`Clock`.

    The route's first timestamp maps to ``clock.monotonic()`` at construction, minus
    ``start_offset`` seconds into the route; ``state()`` consumes every sentence whose route
    time has come. ``Fix.received`` is the monotonic time a real receiver would have delivered
    the sentence, not the time ``state()`` happened to be called, so ages do not depend on how
    often the caller polls.

    Sentences with a bad or missing checksum, that fail to parse, or that claim a fix without
    a usable time or position are skipped and counted in ``bad_sentences`` when their turn
    comes. Blank lines are ignored. With ``loop=True`` the route restarts after its end, and
    fix times keep increasing by one route length per lap.
    """

    def __init__(
        self,
        route: str | Path | Sequence[str],
        clock: Clock,
        start_offset: float = 0.0,
        loop: bool = False,
    ) -> None:
        if isinstance(route, str | Path):
            lines = Path(route).read_text(encoding="ascii", errors="replace").splitlines()
        else:
            lines = list(route)
        decoded = [s for s in (decode_sentence(line) for line in lines) if s is not None]
        # Without any RMC date, assume the route was recorded on the clock's current UTC day.
        today = dt.datetime.fromtimestamp(clock.wall(), dt.UTC).date()
        self._timeline, self._period = _timeline(decoded, today)
        self._clock = clock
        self._origin = clock.monotonic() - start_offset  # monotonic time of route second 0
        self._loop = loop
        self._next = 0
        self._lap = 0
        self._last_fix: Fix | None = None
        self._has_fix = False
        self.bad_sentences = 0

    @property
    def duration(self) -> float:
        """Seconds of one pass through the route (a loop lap)."""
        return self._period

    def state(self) -> GnssState:
        elapsed = self._clock.monotonic() - self._origin
        while self._next < len(self._timeline):
            item = self._timeline[self._next]
            due = item.due + self._lap * self._period
            if due > elapsed:
                break
            self._apply(item, self._origin + due)
            self._next += 1
            if self._next == len(self._timeline) and self._loop:
                self._next = 0
                self._lap += 1
        return GnssState(last_fix=self._last_fix, has_fix=self._has_fix)

    def close(self) -> None:
        pass  # the route was read whole at construction

    def _apply(self, item: _Timed, received: float) -> None:
        s = item.sentence
        if s.kind == "bad":
            self.bad_sentences += 1
        elif s.kind == "lost":
            self._has_fix = False
        elif s.kind == "fix" and item.fix_time is not None:
            fix_time = item.fix_time + self._lap * self._period
            alt, satellites, hdop = s.alt, s.satellites, s.hdop
            prev = self._last_fix
            if s.merge and self._has_fix and prev is not None and prev.fix_time == fix_time:
                alt, satellites, hdop = prev.alt, prev.satellites, prev.hdop
            self._last_fix = Fix(s.lat, s.lon, alt, fix_time, received, satellites, hdop)
            self._has_fix = True


def _timeline(sentences: list[Sentence], fallback_date: dt.date) -> tuple[list[_Timed], float]:
    """Route times and epochs for each sentence, and the length of one lap."""
    first = next((s.tod for s in sentences if s.tod is not None), 0.0)
    placed: list[tuple[float, int, Sentence]] = []
    due, day, prev_tod = 0.0, 0, None
    for s in sentences:
        if s.tod is not None:
            if prev_tod is not None and s.tod < prev_tod - 43_200:
                day += 1  # the time of day wrapped: we passed UTC midnight
            prev_tod = s.tod
            due = max(due, day * 86_400 + s.tod - first)
        placed.append((due, day, s))  # a sentence without a time goes with the one before

    midnight0 = next(
        (utc_midnight(s.date) - d * 86_400 for _, d, s in placed if s.date is not None),
        utc_midnight(fallback_date),
    )
    timed = [
        _Timed(due, None if s.tod is None else midnight0 + d * 86_400 + s.tod, s)
        for due, d, s in placed
    ]
    # One lap is the route span plus one reporting interval, so the restart is on the beat.
    dues = sorted({t.due for t in timed})
    steps = [b - a for a, b in itertools.pairwise(dues)]
    step = min(steps) if steps else 1.0
    return timed, (dues[-1] if dues else 0.0) + step

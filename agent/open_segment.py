"""The segment being written, and the closed pre-event segments waiting in the spool.

An :class:`OpenSegment` is one file per track, cut at the same frame, and what its manifests
will say of where it was recorded; :func:`owner` says which of the open segments' files a
packet belongs in, by its timestamp. :class:`Buffered` is a closed segment outside a
session, sealed only if one opens in time. The :class:`agent.segments.Segmenter` cuts,
closes and seals them; these are the things it holds.

Example::

    seg = OpenSegment(writers, Moment(wall, mono, synced))
    seg.note_position(gnss, now)
    seg.location()   # -> Location('ok', (lat, lon), (lat, lon), None)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.media import SegmentFile, WrittenSegment
from device.gnss import GnssState
from evidence.manifest import Location
from evidence.seal import Moment


@dataclass
class OpenSegment:
    """The segment being written — one file per track, cut at the same frame — and what
    its manifests will say about where it was recorded."""

    writers: dict[str, SegmentFile]
    start: Moment
    positions: list[tuple[float, float] | None] = field(default_factory=list)
    max_fix_age: float | None = None
    audio_ok: bool = True
    frames: int = 0  # frames given to the encoders for it

    def note_position(self, gnss: GnssState, now: float) -> None:
        fix = gnss.last_fix
        self.positions.append((fix.lat, fix.lon) if gnss.has_fix and fix else None)
        age = gnss.age(now)
        if not gnss.has_fix and age is not None:
            self.max_fix_age = max(self.max_fix_age or 0.0, age)

    def location(self) -> Location:
        fixes = [p for p in self.positions if p]
        if not fixes:
            quality = "none"
        elif len(fixes) == len(self.positions):
            quality = "ok"
        else:
            quality = "partial"
        return Location(
            quality,
            fixes[0] if fixes else None,
            fixes[-1] if fixes else None,
            None if self.max_fix_age is None else round(self.max_fix_age, 3),
        )


@dataclass
class Buffered:
    """A closed pre-event segment waiting in the spool: sealed if a session opens in time."""

    written: dict[str, WrittenSegment]
    start: Moment
    end: Moment
    location: Location
    audio_ok: bool


def owner(writers: list[SegmentFile], pts: int | None, origin: str) -> SegmentFile:
    """The last of ``writers`` (oldest first) starting at or before ``pts``; the oldest for
    what comes before them all."""
    for w in reversed(writers):
        if pts is not None and pts >= getattr(w, origin):
            return w
    return writers[0]

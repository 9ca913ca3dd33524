"""What each session's close states against the segments the chain holds for it. Pure.

A ``session_close`` is a signed statement of how many segments its session sealed, in all
and per track. A device that counted before its sealer had sealed the last segments
signed a wrong number; nothing but this comparison would show it. Verification names a
close that disagrees (``close_count_mismatch``); the custody summary shows the comparison.

Example::

    for close in session_closes(entries):          # the chain's entries, in order
        if close.mismatch:
            print(close.session, close.mismatch)   # "states 3 segments, the chain holds 4"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evidence.body_fields import ManifestError
from evidence.manifest import MAIN_TRACK
from evidence.seal import Entry
from evidence.session_bodies import SessionClose


@dataclass(frozen=True)
class CloseCounts:
    """One session's close: what it states (None: its body is malformed, ``malformed``
    says why) and the segments of its session sealed before it, per track."""

    session: str
    seq: int  # the close's entry
    stated: SessionClose | None
    held: Mapping[str, int]
    malformed: str | None = None

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    @property
    def mismatch(self) -> str | None:
        """Every count the close states that the chain does not hold (None: all agree)."""
        if self.stated is None:
            return None
        wrong = []
        if self.stated.segments != self.held_total:
            wrong.append(
                f"states {self.stated.segments} segments, the chain holds {self.held_total}"
            )
        for track, n in sorted(self.stated.tracks.items()):
            if n != self.held.get(track, 0):
                wrong.append(f"track {track}: states {n}, holds {self.held.get(track, 0)}")
        return "; ".join(wrong) or None

    def as_dict(self) -> dict[str, Any]:
        """The comparison as the custody summary carries it."""
        stated = self.stated
        return {
            "entry": self.seq,
            "stated": {"segments": stated.segments, "tracks": dict(stated.tracks)}
            if stated
            else None,
            "held": {"segments": self.held_total, "tracks": dict(sorted(self.held.items()))},
            "agrees": stated is not None and self.mismatch is None,
            "mismatch": self.malformed or self.mismatch,
        }


def session_closes(entries: Sequence[Entry]) -> list[CloseCounts]:
    """Each session's close in ``entries`` (in chain order), with the segment entries of
    its session between its open and it. A segment is counted by its entry, whether or
    not its manifest is well formed (verification names a malformed one on its own)."""
    held: dict[str, dict[str, int]] = {}  # the sessions open, their segments per track
    closes = []
    for e in entries:
        sid = e.session
        if sid is None:
            continue
        if e.kind == "session_open":
            held[sid] = {}
        elif e.kind == "segment" and sid in held:
            track = e.body.get("track")
            name = track if isinstance(track, str) and track else MAIN_TRACK
            held[sid][name] = held[sid].get(name, 0) + 1
        elif e.kind == "session_close" and sid in held:
            try:
                stated, why = SessionClose.from_body(e.body), None
            except ManifestError as err:
                stated, why = None, str(err)
            closes.append(CloseCounts(sid, e.seq, stated, held.pop(sid), why))
    return closes


def session_close(entries: Sequence[Entry], session: str) -> CloseCounts | None:
    """``session``'s close (None: the chain holds none)."""
    return next((c for c in session_closes(entries) if c.session == session), None)

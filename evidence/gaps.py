"""Gaps in a session and their explanations (R-Art 16): derived from the chain, pure.

Every interruption the device logged becomes a :class:`Gap` with its cause, bounds, what it
affected and how it was explained. A hole in a session's media timeline that no
interruption covers is a *silent gap*: the one thing the regulation forbids outright.

Example::

    gaps = session_gaps(entries_of_one_session)
    [g.explanation for g in gaps]        # ["voice", None, "written"]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from evidence.body_fields import ManifestError
from evidence.entries import Statement, WrittenExplanation, explanation
from evidence.seal import Entry
from evidence.session_bodies import Interruption, InterruptionEnd, VoiceExplanation

CAUSES = (
    "camera",  # camera failure or stall
    "encoder",  # the video/audio encoder failed
    "microphone",
    "storage_full",
    "write_error",
    "battery",  # battery critical or shutdown
    "power_loss",  # found at the next boot from the journal
    "clock_jump",  # the wall clock jumped; monotonic time is unaffected
    "officer_stop",  # recording stopped while the session stayed open
    "overload",  # the recorder could not keep real time (a stall, a slow or busy machine)
)

MIN_ATTESTERS = 2  # a written statement needs at least two distinct officers


@dataclass
class Gap:
    id: str
    session: str
    cause: str
    start: float  # wall clock
    end: float | None  # None: recording never resumed
    affects: list[str]
    explanation: str | None = None  # "voice", "written" or None
    detail: str = ""
    statement: dict[str, Any] | None = None
    seq: int = 0
    tracks: list[str] = field(default_factory=list)  # the tracks interrupted; empty: all

    def covers(self, track: str) -> bool:
        return not self.tracks or track in self.tracks

    @property
    def length(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["length"] = self.length
        return d


@dataclass
class GapProblems:
    silent: list[tuple[str, float, float]] = field(default_factory=list)  # (session, from, to)
    bad_statements: list[tuple[int, str]] = field(default_factory=list)  # (seq, why)
    # (seq, session, why): an interruption, its end or its explanation whose body does not
    # read as its kind says; it is named, and counts as no entry
    malformed: list[tuple[int, str | None, str]] = field(default_factory=list)

    def named(self) -> list[tuple[str, int, str | None, str]]:
        """Each problem as (verification code, entry, session, why), in chain order."""
        out = [("malformed_entry", *m) for m in self.malformed]
        out += [("bad_statement", seq, None, why) for seq, why in self.bad_statements]
        return sorted(out, key=lambda p: p[1])


def written_statement_problem(statement: Statement) -> str | None:
    """Why a written statement does not count, or None. Attestations are checked for
    authenticity by whoever accepts them (device or store); here: enough distinct officers."""
    if not statement.reason.strip():
        return "a written statement needs a reason"
    badges = {a.badge for a in statement.attestations if a.badge}
    if len(badges) < MIN_ATTESTERS:
        return f"a written statement needs {MIN_ATTESTERS} distinct officers, has {len(badges)}"
    return None


GapBody = Interruption | InterruptionEnd | VoiceExplanation | WrittenExplanation
GAP_KINDS = ("interruption", "interruption_end", "explanation")


def gap_body(entry: Entry) -> GapBody:
    """An interruption's, its end's or its explanation's body, every field type-checked by
    its owner; ManifestError names the entry and the field (or says it is another kind)."""
    try:
        return _read(entry)
    except ManifestError as e:
        raise ManifestError(f"entry {entry.seq}: {e}") from None


def _read(entry: Entry) -> GapBody:
    if entry.kind == Interruption.KIND:
        return Interruption.from_body(entry.body)
    if entry.kind == InterruptionEnd.KIND:
        return InterruptionEnd.from_body(entry.body)
    if entry.kind == "explanation":
        return explanation(entry.body)
    raise ManifestError(f"a {entry.kind[:40]} is no interruption, end or explanation")


def session_gaps(entries: Iterable[Entry]) -> tuple[list[Gap], GapProblems]:
    """The gaps of the sessions in ``entries`` (chain order), and what is wrong with them.
    Whatever a body holds: one that does not read is a problem, never an exception."""
    gaps: dict[str, Gap] = {}
    problems = GapProblems()
    for e in entries:
        if e.kind not in GAP_KINDS:
            continue
        try:
            b = _read(e)
        except ManifestError as err:  # verification names the entry: the body says what
            problems.malformed.append((e.seq, e.session, str(err)))
            continue
        if isinstance(b, Interruption):
            gaps[b.id] = Gap(
                id=b.id,
                session=str(e.session),
                cause=b.cause,
                start=b.start.wall,
                end=b.end.wall if b.end else None,
                affects=list(b.affects),
                detail=b.detail,
                seq=e.seq,
                tracks=list(b.tracks),
            )
        elif isinstance(b, InterruptionEnd):
            if b.id in gaps:
                gaps[b.id].end = b.end.wall
        elif b.interruption not in gaps:
            continue
        elif isinstance(b, VoiceExplanation):
            # a clip spoken after a written statement (a device that died came back)
            # does not replace the statement two officers signed
            g = gaps[b.interruption]
            g.explanation = g.explanation or "voice"
        elif why := written_statement_problem(b.statement):
            problems.bad_statements.append((e.seq, why))
        else:
            g = gaps[b.interruption]
            g.explanation, g.statement = "written", b.statement.to_body()
    return list(gaps.values()), problems


def interrupted_tracks(entry: Entry) -> list[str]:
    """The tracks an interruption entry stops (empty: every track, or a body that does not
    read: :func:`session_gaps` names that one)."""
    try:
        b = _read(entry)
    except ManifestError:
        return []
    return list(b.tracks) if isinstance(b, Interruption) else []


@dataclass(frozen=True)
class Span:
    """A segment's extent: wall clock (for people, across boots) and monotonic (within one
    boot, immune to wall-clock jumps)."""

    wall_start: float
    wall_end: float
    mono_start: float
    mono_end: float


def silent_gaps(
    segments: list[Span], gaps: list[Gap], tolerance: float
) -> list[tuple[float, float]]:
    """Holes between consecutive segments (in order) longer than ``tolerance`` that no
    interruption covers, as (wall from, wall to)."""
    out = []
    for prev, cur in itertools.pairwise(segments):
        prev_end, start = prev.wall_end, cur.wall_start
        # Same boot (monotonic time goes on): measure on it, so a clock jump is no hole.
        same_boot = cur.mono_start >= prev.mono_end - tolerance
        hole = cur.mono_start - prev.mono_end if same_boot else start - prev_end
        if hole <= tolerance:
            continue
        covered = any(
            g.start <= prev_end + tolerance and (g.end is None or g.end >= start - tolerance)
            for g in gaps
        )
        if not covered:
            out.append((prev_end, start))
    return out

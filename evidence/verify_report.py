"""The verification report: what :func:`evidence.verify.verify_chain` found, as data (the
JSON of ``unbroken verify --json``: :meth:`Report.as_dict`) and as people read it
(:func:`format_report`). Every problem code is named here, with what it means."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from evidence.manifest import MAIN_TRACK

# code -> what it means; docs/evidence-format.md lists the same.
PROBLEMS = {
    "malformed_entry": "a file in the chain is not a valid entry (corrupt or foreign)",
    "bad_signature": "an entry's signature does not verify with the device key",
    "wrong_key": "the chain was signed by a different key than the pinned one",
    "retired_key": "an entry is signed by a key after the rotation that retired it",
    "later_key": "the pinned key is one the chain rotated to later: pin its first key",
    "foreign_device": "an entry names another device than the chain",
    "duplicate_sequence": "two entries claim the same sequence number",
    "resealed_file": "two manifests seal the same file name (only one can be its bytes)",
    "sequence_gap": "entries are missing from the chain (deleted)",
    "chain_break": "an entry does not name its predecessor's hash (altered or reordered)",
    "time_order": "monotonic time goes backwards within one boot",
    "foreign_session": "an entry belongs to a session that is not open at that point",
    "misplaced_entry": "an entry file holds another sequence number than its name says",
    "segment_gap": "a session's segment numbering skips (segment deleted)",
    "missing_segment": "a segment's media file is absent",
    "unsafe_path": "a segment's file is named through a symbolic link or outside the directory",
    "truncated_segment": "a segment's media file is shorter than sealed",
    "hash_mismatch": "a segment's media bytes differ from the sealed hash",
    "swapped_segment": "a segment's file holds the bytes sealed for another segment",
    "undecodable": "a segment's media does not decode",
    "frame_count": "a segment decodes to a different number of frames than sealed",
    "no_audio": "a segment that was sealed with audio has none",
    "encryption_mismatch": "a segment's file is not encrypted as its manifest says",
    "plaintext_mismatch": "a segment decrypts to other media than its manifest sealed",
    "timestamp_discontinuity": "media timestamps do not continue across segments",
    "unexpected_file": "a file in the evidence directory is not referenced by the chain",
    "silent_gap": "a hole in a session's recording that no interruption entry explains",
    "close_count_mismatch": "a session's close states other segment counts than it holds",
    "bad_statement": "a written statement that does not count (too few distinct officers)",
    "unexplained_gap": "an interruption with no explanation (a problem only with --strict)",
    "no_evidence": "the chain holds no entries: no evidence is not intact evidence",
}


@dataclass(frozen=True)
class Problem:
    code: str
    where: str  # which entry or file
    message: str
    session: str | None = None


class NameProblem(Protocol):
    """Names a problem in the report being built (and in its session's, if it has one)."""

    def __call__(self, code: str, where: str, message: str, session: str | None = None) -> None: ...


@dataclass
class SessionReport:
    id: str
    category: str | None = None
    badges: list[str] = field(default_factory=list)
    opened: float | None = None  # wall clock
    closed: float | None = None
    segments: int = 0  # on all tracks
    duration: float = 0.0  # seconds of sealed media (the longest track)
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)  # segments, duration
    prebuffer: float = 0.0  # seconds recorded before the session opened
    archived: int = 0  # segments deleted locally after the agency's receipt
    gaps: list[dict[str, Any]] = field(default_factory=list)  # every interruption, explained?
    markers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    room: str | None = None  # an interview room's session
    case: str | None = None
    first_track: str = MAIN_TRACK  # whose pre-event footage is counted

    @property
    def state(self) -> str:
        return "closed" if self.closed is not None else "open"

    @property
    def continuous(self) -> bool:
        return not self.gaps


@dataclass
class Report:
    device: str | None
    key_id: str
    pinned: bool
    entries: int = 0
    sessions: list[SessionReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # worth a reader's attention, not a fault of the evidence (clock_backwards)
    notices: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "device": self.device,
            "key_id": self.key_id,
            "key_pinned": self.pinned,
            "entries": self.entries,
            "sessions": [
                {
                    **asdict(s),
                    "state": s.state,
                    "continuous": s.continuous,
                    "problems": [asdict(p) for p in s.problems],
                }
                for s in self.sessions
            ],
            "problems": [asdict(p) for p in self.problems],
            "notices": [asdict(p) for p in self.notices],
        }


def _when(wall: float | None) -> str:
    if wall is None:
        return "-"
    return dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_report(r: Report, source: str) -> str:
    lines = [f"Evidence: {source}", f"Device:   {r.device or '(unknown)'}"]
    key = f"key {r.key_id}"
    pin = "" if r.pinned else "  (NOT PINNED: taken from the directory)"
    lines.append(f"Key:      {key}{pin}")
    lines.append(f"Entries:  {r.entries}")
    for s in r.sessions:
        lines += [
            "",
            f"Session {s.id}  [{s.state}]",
            f"  category  {s.category}   badges {', '.join(s.badges) or '-'}",
            f"  opened    {_when(s.opened)}   closed {_when(s.closed)}",
            *([f"  room      {s.room}   case {s.case or '-'}"] if s.room or s.case else []),
            f"  segments  {s.segments}   duration {s.duration:.1f} s   "
            f"pre-event {s.prebuffer:.1f} s"
            + (f"   {s.archived} at the agency only (receipted)" if s.archived else ""),
        ]
        if len(s.tracks) > 1:
            lines += [
                f"  track     {name}: {t['segments']} segments, {t['duration']:.1f} s"
                for name, t in s.tracks.items()
            ]
        for m in s.markers:
            lines.append(f"  marker    {_when(m['wall'])}  {m['type']}")
        lines.append(
            "  recording continuous" if s.continuous else f"  recording has {len(s.gaps)} gap(s):"
        )
        for g in s.gaps:
            length = "never resumed" if g["length"] is None else f"{g['length']:.1f} s"
            how = g["explanation"] or "UNEXPLAINED"
            if g["explanation"] == "written" and g["statement"]:
                officers = ", ".join(a["badge"] for a in g["statement"]["attestations"])
                how = f"written statement by {officers}"
            on = f" on {', '.join(g['tracks'])}" if g.get("tracks") else ""
            lines.append(
                f"  gap       {_when(g['start'])}  {g['cause']} ({', '.join(g['affects'])}){on}, "
                f"{length}; explanation: {how}"
            )
        for p in s.problems:
            lines.append(f"  PROBLEM   {p.code}: {p.where}: {p.message}")
    unattached = [p for p in r.problems if p.session is None]
    if unattached:
        lines.append("")
        for p in unattached:
            lines.append(f"PROBLEM {p.code}: {p.where}: {p.message}")
    lines += [f"NOTICE {n.code}: {n.where}: {n.message}" for n in r.notices]
    lines += [
        "",
        "RESULT: OK" if r.ok else f"RESULT: FAILED ({_count(len(r.problems), 'problem')})",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

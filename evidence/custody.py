"""The custody summary of an exported session (R8): who collected it, when, where, every
gap and why, whether the evidence verified, and the hash of every source segment. Pure.

The exporting shell (``unbroken export``) reads the chain, verifies the directory and
writes the files; this module decides which problems stop an export, and builds the
summary from the chain's entries, the verification report and where each segment went
in the exported files (each track's account: :mod:`evidence.custody_tracks`).

Example::

    summary = custody_summary(entries, report, session, exported, now, accepted=False)
    summary.as_dict()        # the JSON beside the export
    summary.text()           # the same for people
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from evidence.body_fields import ManifestError
from evidence.close_counts import session_close
from evidence.custody_report import format_custody, when
from evidence.custody_tracks import ExportedTrack, export_position, session_segments, track_account
from evidence.entries import Assignment
from evidence.gaps import gap_body, session_gaps
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.session_bodies import SessionOpen, VoiceExplanation
from evidence.verify_report import Problem, Report

FORMAT = "unbroken-custody/1"
MAX_PLACES = 50  # distinct places listed; more are counted
PLACE_DIGITS = 4  # positions rounded to about 10 m to tell places apart

# Problems that concern only the session they name: another session's do not stop an
# export of this one. Anything else (a signature, the chain's order) concerns them all.
SESSION_PROBLEMS = frozenset(
    {
        *("segment_gap", "missing_segment", "unsafe_path", "truncated_segment"),
        *("hash_mismatch", "swapped_segment", "undecodable", "frame_count", "no_audio"),
        *("timestamp_discontinuity", "silent_gap", "unexplained_gap", "foreign_session"),
        *("close_count_mismatch", "resealed_file"),
    }
)


def sessions_in(entries: Sequence[Entry]) -> list[str]:
    """The sessions opened in the chain, in order."""
    return [str(e.session) for e in entries if e.kind == "session_open" and e.session]


def blocking(report: Report, session: str) -> list[Problem]:
    """The problems that stop an export of ``session`` unless the user accepts them."""
    return [
        p for p in report.problems if p.session in (None, session) or p.code not in SESSION_PROBLEMS
    ]


@dataclass
class CustodySummary:
    doc: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.doc

    @property
    def verified(self) -> bool:
        return bool(self.doc["verification"]["ok"])

    def text(self) -> str:
        return format_custody(self.doc)


def custody_summary(
    entries: Sequence[Entry],
    report: Report,
    session: str,
    exported: Mapping[str, ExportedTrack],
    exported_at: float,
    accepted: bool = False,
    software: str = "",
    source: str = "",
    agency_statements: Mapping[str, Mapping[str, Any]] | None = None,
) -> CustodySummary:
    """The summary of ``session``'s export. ``entries``: the chain's valid entries in
    order; ``accepted``: the user exported despite ``blocking`` problems;
    ``agency_statements``: written statements the agency added beside the chain, by gap
    id (their signed payloads, as the store keeps them)."""
    opened = next(e for e in entries if e.kind == "session_open" and e.session == session)
    spec = SessionOpen.from_body(opened.body)
    closed = next((e for e in entries if e.kind == "session_close" and e.session == session), None)
    counts = session_close(entries, session)
    segments = session_segments(entries, session)
    manifests = [s.manifest for segs in segments.values() for s in segs]
    problems = blocking(report, session)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "session": session,
        "source": source,
        "device": {"id": report.device, "key_id": report.key_id, "key_pinned": report.pinned},
        "collector": _collector(entries, opened, spec, manifests),
        "category": spec.category,
        "room": spec.room,
        "case": spec.case.case if spec.case else None,
        "person": spec.case.person if spec.case else None,
        "trigger": spec.trigger,
        "opened": _moment(opened.payload["at"]),
        "closed": _moment(closed.payload["at"]) if closed else None,
        "close_counts": counts.as_dict() if counts else None,  # what the close states, held
        "footage": _footage(manifests),
        "places": _places(manifests, spec.room),
        "markers": _markers(entries, session),
        "interruptions": _interruptions(entries, session, agency_statements or {}),
        "export_track": spec.first_track if spec.first_track in segments else None,
        "verification": {
            "ok": not problems,
            "accepted": accepted and bool(problems),
            "problems": [asdict(p) for p in problems],
            "other_sessions_problems": len(report.problems) - len(problems),
            "notices": [asdict(n) for n in report.notices],
        },
        "tracks": {
            track: track_account(segs, exported.get(track), problems)
            for track, segs in segments.items()
        },
        "exported_at": when(exported_at),
        "software": software,
    }
    first = segments.get(spec.first_track, [])
    for g in doc["interruptions"]:
        g["in_export"] = export_position(g["epoch"], first, exported.get(spec.first_track))
    doc["how_to_check"] = how_to_check(doc)
    return CustodySummary(doc)


# -- the parts ---------------------------------------------------------------------------


def _moment(at: Mapping[str, Any]) -> dict[str, Any]:
    wall = float(at["wall"])
    return {"wall": when(wall), "epoch": wall, "synced": bool(at.get("synced"))}


def _collector(
    entries: Sequence[Entry], opened: Entry, spec: SessionOpen, manifests: list[SegmentManifest]
) -> dict[str, Any]:
    """The officers: as the session was opened, as burned into the picture, and the
    agency's assignment of the device in force when it opened."""
    burned: list[str] = []
    for m in manifests:
        burned += [b for b in m.badges if b not in burned]
    assigned = None
    for e in entries:
        if e.seq > opened.seq:
            break
        if e.kind == "assignment":
            try:
                a = Assignment.from_body(e.body)
            except ManifestError as err:  # said, not left out: the device sealed it so
                assigned = {"unreadable": str(err)}
                continue
            fields = ("badges", "name", "unit", "room", "agency", "issued")
            assigned = None if a.command == "unassign" else {k: getattr(a, k) for k in fields}
    return {"badges": list(spec.badges), "in_picture": burned, "assigned": assigned}


def _footage(manifests: list[SegmentManifest]) -> dict[str, Any]:
    if not manifests:
        return {"start": None, "end": None, "segments": 0, "seconds": 0.0}
    per_track: dict[str, float] = {}
    for m in manifests:
        per_track[m.track_name] = per_track.get(m.track_name, 0.0) + m.video.frames / m.video.fps
    first = min(manifests, key=lambda m: (m.start.wall, m.index))
    last = max(manifests, key=lambda m: (m.end.wall, m.index))
    return {
        "start": _moment(first.start.as_dict()),
        "end": _moment(last.end.as_dict()),
        "segments": len(manifests),
        "seconds": round(max(per_track.values()), 3),  # recorded, on the longest track
    }


def _places(manifests: list[SegmentManifest], room: str | None) -> dict[str, Any]:
    points = [p for m in manifests for p in (m.location.start, m.location.end) if p]
    distinct: list[list[float]] = []
    seen = set()
    for lat, lon in points:
        key = (round(lat, PLACE_DIGITS), round(lon, PLACE_DIGITS))
        if key not in seen:
            seen.add(key)
            distinct.append([key[0], key[1]])
    return {
        "room": room,
        "first": list(points[0]) if points else None,
        "last": list(points[-1]) if points else None,
        "distinct": distinct[:MAX_PLACES],
        "more": max(0, len(distinct) - MAX_PLACES),
        "without_fix": sum(1 for m in manifests if m.location.fix in ("none", "unknown")),
    }


def _markers(entries: Sequence[Entry], session: str) -> list[dict[str, Any]]:
    return [
        {
            "type": e.body.get("type"),
            "at": when(float(e.payload["at"]["wall"])),
            "note": e.body.get("note", ""),
            "location": e.body.get("location"),
        }
        for e in entries
        if e.kind == "marker" and e.session == session
    ]


def _interruptions(
    entries: Sequence[Entry], session: str, at_agency: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    gaps, _ = session_gaps(entries)
    clips: dict[str, tuple[str | None, str | None]] = {}
    for e in entries:
        with suppress(ManifestError):  # verification names an explanation that does not read
            if e.kind == "explanation" and isinstance(v := gap_body(e), VoiceExplanation):
                clips.setdefault(v.interruption, (when(v.start.wall), when(v.end.wall)))
    out = []
    for g in gaps:
        if g.session != session:
            continue
        added = at_agency.get(g.id)
        if g.explanation is None and added and added.get("statement"):
            g.explanation, g.statement = "written", dict(added["statement"])
            g.detail = (g.detail + " (statement added at the agency)").strip()
        if g.explanation == "voice" and g.id in clips:
            start, end = clips[g.id]
            how = f"spoken by the officer on resuming (clip {start} to {end})"
        elif g.explanation == "written" and g.statement:
            badges = ", ".join(str(a.get("badge")) for a in g.statement.get("attestations", []))
            how = f"written statement by {badges}: {g.statement.get('reason', '')}"
        else:
            how = "unexplained"
        out.append(
            {
                "id": g.id,
                "cause": g.cause,
                "affects": g.affects,
                "tracks": g.tracks or "all",
                "start": when(g.start),
                "epoch": g.start,
                "end": when(g.end),
                "seconds": g.length,
                "detail": g.detail,
                "explanation": g.explanation,
                "explained": how,
                "statement": g.statement,
            }
        )
    return out


def how_to_check(doc: Mapping[str, Any]) -> list[str]:
    """How anyone can check the export against the sealed segments, step by step."""
    device = doc["device"]
    return [
        "1. Verify the evidence the export came from: `unbroken verify DIR --pubkey KEY`, "
        f"pinning the key registered for device {device['id']} (key id {device['key_id']}). "
        "It checks every seal, the chain's order and every segment's SHA-256 and decoding.",
        "2. Each source segment's SHA-256 listed here equals the `sha256` of the manifest "
        "sealed in the chain entry named beside it (`sealed_by`), and `sha256sum` of the "
        "segment's file.",
        "3. Each exported MP4 is a stream copy: its packets are the segments' packets, byte "
        "for byte and in order; only their timestamps are set. For the video (`v`) and the "
        "sound (`a`) of a track, list the packets' hashes of the export: "
        "`ffprobe -v error -select_streams v -show_packets -show_data_hash SHA256 "
        "-show_entries packet=data_hash -of csv=p=0 EXPORT.mp4 | grep -o 'SHA256:[0-9a-f]*'`; "
        "then the same of the segment files in the order listed, one after another (or at "
        "once: a list of `file 'PATH'` lines read with `-f concat -safe 0 -auto_convert 0 "
        "-i LIST`; without `-auto_convert 0` the concat demuxer rewrites H.264 packets). "
        "The two lists are identical.",
        "   Encrypted segments (`encrypted_to`: the agency's evidence key) are compared by "
        "the MP4 inside each one, decrypted with that key; `plain_sha256` is its SHA-256, "
        "sealed in the manifest.",
        "4. Where the export left a hole, moved the sound, or left a segment out, the "
        "track's notes say so; each interruption of the recording is listed with its cause "
        "and explanation.",
    ]

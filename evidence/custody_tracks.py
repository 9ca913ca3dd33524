"""Each track of an exported session, for its custody summary: every sealed source
segment (its file, SHA-256 and the entry that seals it), where it went in the exported
files (:mod:`evidence.splice`'s placement) or why it is not there, and what a reader of
the export must know of the splice (holes, late sound, a codec change). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evidence.body_fields import ManifestError
from evidence.custody_report import when
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.splice import Placement
from evidence.verify_report import Problem


def session_segments(entries: Sequence[Entry], session: str) -> dict[str, list[SealedSegment]]:
    """Each track's sealed segments of ``session``, by index (a malformed manifest, which
    verification names, is left out)."""
    out: dict[str, list[SealedSegment]] = {}
    for e in entries:
        if e.kind != "segment" or e.session != session:
            continue
        try:
            m = SegmentManifest.from_body(e.body)
        except ManifestError:
            continue
        out.setdefault(m.track_name, []).append(SealedSegment(e.seq, e.hash, m))
    for segs in out.values():
        segs.sort(key=lambda s: s.manifest.index)
    return out


@dataclass(frozen=True)
class SealedSegment:
    seq: int  # the chain entry that seals it
    entry_hash: str
    manifest: SegmentManifest


@dataclass(frozen=True)
class ExportedTrack:
    """What the shell wrote for one track: its files (one, unless the codec headers
    changed between segments; none if not one segment was there) with their lengths, where
    each segment went (by index: the placement, and which file) and why a segment is not
    in it."""

    files: Sequence[tuple[str, float]]
    placed: Mapping[int, Placement]
    part_of: Mapping[int, int] = field(default_factory=dict)
    left_out: Mapping[int, str] = field(default_factory=dict)
    fps: int = 30
    rate: int = 48000


def track_account(
    segs: list[SealedSegment], exported: ExportedTrack | None, problems: list[Problem]
) -> dict[str, Any]:
    """One track's part of the summary: its exported files, a row per sealed segment
    (where it went, or why it is not there) and the notes a reader of the export needs."""
    placed = exported.placed if exported else {}
    left_out = exported.left_out if exported else {}
    rows, notes = [], []
    last_part = 0
    for s in segs:
        m = s.manifest
        p = placed.get(m.index)
        row: dict[str, Any] = {
            "index": m.index,
            "file": m.file,
            "sha256": m.sha256,
            "size": m.size,
            "start": when(m.start.wall),
            "end": when(m.end.wall),
            "frames": m.video.frames,
            "sealed_by": {"seq": s.seq, "entry_hash": s.entry_hash},
            "recovered": m.recovered,
            "prebuffer_seconds": m.prebuffer_seconds,
            "in_export": None,
            "problems": [p.code for p in problems if p.where == m.file],
        }
        encryption = getattr(m, "encryption", None)  # sealed since devices encrypt (R7)
        if encryption is not None and encryption.encrypted:
            row["encrypted_to"] = encryption.key
            row["plain_sha256"] = encryption.plain_sha256  # the MP4 inside
        if p is not None and exported is not None:
            part = exported.part_of.get(m.index, 0)
            row["export_file"] = exported.files[part][0]
            row["in_export"] = [
                round(p.video / exported.fps, 3),
                round((p.video + p.frames) / exported.fps, 3),
            ]
            if part and part != last_part:
                notes.append(
                    f"from segment {m.index} the codec headers change (the encoder restarted "
                    "with other settings, e.g. a lower bitrate on a nearly full disk): one MP4 "
                    f"track cannot hold both, so the footage goes on in {row['export_file']}"
                )
            last_part = part
            notes += _placement_notes(m, p, exported)
        else:
            why = left_out.get(m.index, "not exported")
            row["left_out"] = why
            notes.append(f"segment {m.index} ({m.file}) is not in the export: {why}")
        rows.append(row)
    files = exported.files if exported else []
    return {
        "files": [{"file": f, "duration": round(d, 3)} for f, d in files],
        "segments": rows,
        "notes": notes,
    }


def export_position(
    wall: float, segs: list[SealedSegment], exported: ExportedTrack | None
) -> dict[str, Any] | None:
    """Where a moment of the session falls in a track's export: the file and the second
    in it (None: the track was not exported), in the last segment that began by then."""
    if exported is None or not exported.files:
        return None
    at = {"file": exported.files[0][0], "at": 0.0}
    for s in segs:
        m = s.manifest
        p = exported.placed.get(m.index)
        if p is None or m.start.wall > wall:
            continue
        into = min(max(0.0, wall - m.start.wall), p.frames / exported.fps)
        part = exported.part_of.get(m.index, 0)
        at = {"file": exported.files[part][0], "at": round(p.video / exported.fps + into, 3)}
    return at


def _placement_notes(m: SegmentManifest, p: Placement, t: ExportedTrack) -> list[str]:
    at = f"at {p.video / t.fps:.3f} s of the export"
    notes = []
    if p.hole_frames:
        notes.append(
            f"{at}: {p.hole_frames} frame(s) of hole before segment {m.index}, where the "
            "evidence has a gap and a new recording begins"
        )
    if p.audio_lag:
        notes.append(
            f"{at}: from segment {m.index} the sound is {p.audio_lag / t.rate * 1000:.1f} ms "
            "late against the picture (the encoder restarted with no gap; its packets are kept)"
        )
    if p.audio_hole:
        notes.append(
            f"{at}: {p.audio_hole / t.rate * 1000:.1f} ms with no sound packet before "
            f"segment {m.index}"
        )
    if m.recovered:
        notes.append(f"segment {m.index} was cut short by a power loss and recovered at boot")
    return notes

"""``unbroken export``: one session of an evidence directory as one MP4 per track, by
stream copy, with its custody summary beside them.

The directory is verified first; evidence that fails is refused, naming each problem,
unless the user accepts it, and then the summary says so. Every packet of every segment
is copied unchanged and in order (PyAV, no decoding); only timestamps are set, by
:mod:`evidence.splice`. The summary is :mod:`evidence.custody`'s. What the export reads
(and its errors) is :mod:`unbroken.export_reading`; the copy, :mod:`unbroken.stream_copy`.

Example::

    result = export_session(Path("/var/lib/unbroken"), None, Path("/tmp/case-17"))
    result.files      # [.../<session>-main.mp4, .../<session>-custody.json, ...-custody.txt]
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.public

from agent.evidence_dir import EvidenceDirError, verify_dir
from common.files import unwritable_dir
from common.progress import VERIFYING, Progress
from evidence.custody import CustodySummary, blocking, custody_summary, sessions_in
from evidence.custody_tracks import ExportedTrack, session_segments
from unbroken.export_reading import (
    NO_KEY,
    ExportError,
    ExportRefused,
    SegmentReader,
    chain_entries,
    check_key,
    evidence_key_problem,
    pick_session,
    refusal,
    usable,
)
from unbroken.stream_copy import mux_track

# The phases an export reports (common.progress), in order.
EXPORTING, SUMMARY = "exporting", "writing the custody summary"


@dataclass
class ExportResult:
    session: str
    files: list[Path]
    summary: CustodySummary
    tracks: dict[str, ExportedTrack] = field(default_factory=dict)


def output_names(out: Path, session: str, tracks: list[str]) -> list[Path]:
    """The files an export writes (a track's further parts, if any, beside its file)."""
    return [
        *(out / f"{session}-{t}.mp4" for t in tracks),
        out / f"{session}-custody.json",
        out / f"{session}-custody.txt",
    ]


def export_session(
    root: Path,
    session: str | None,
    out: Path,
    pubkey: Path | None = None,
    accept_problems: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    software: str = "",
    source: str | None = None,
    agency_statements: Mapping[str, dict[str, Any]] | None = None,
    evidence_key: nacl.public.PrivateKey | None = None,
    no_key: str = NO_KEY,
) -> ExportResult:
    """Verify ``root``, then export ``session`` (None: the only one) into ``out``.
    ``evidence_key``: the agency's key the footage is encrypted to (R7), to read it;
    ``no_key``: how to give it, said if it is needed and not given. ``progress`` hears
    of each phase (VERIFYING, EXPORTING a step per segment, SUMMARY)."""
    step = progress or (lambda phase, done, total: None)
    try:
        if evidence_key is not None and (why := evidence_key_problem(root, evidence_key)):
            raise ExportError(f"{why}: the footage cannot be decrypted with it")
        step(VERIFYING, 0, None)
        report = verify_dir(root, pubkey, evidence_key=evidence_key, progress=progress)
        entries = chain_entries(root)
    except EvidenceDirError as e:
        raise ExportError(str(e)) from None
    session = pick_session(sessions_in(entries), session, root)
    problems = blocking(report, session)
    segments = session_segments(entries, session)
    absent = [
        s.manifest.file
        for segs in segments.values()
        for s in segs
        if not usable(root, s.manifest.file)
        and not any(p.where == s.manifest.file for p in problems)
    ]
    if (problems or absent) and not accept_problems:
        raise ExportRefused(refusal(problems, absent, session), problems)
    check_key(root, segments, evidence_key, no_key)
    files = output_names(out, session, list(segments))
    _check_outputs(out, files + _parts(out, session, list(segments)), force)
    counted = _Counter(sum(len(s) for s in segments.values()), step)
    reader = SegmentReader(root, evidence_key, accept_problems)
    exported = {
        track: mux_track(reader, segs, out, session, track, counted.step)
        for track, segs in segments.items()
    }
    files = [out / name for t in exported.values() for name, _ in t.files] + files[-2:]
    step(SUMMARY, 0, 1)
    summary = custody_summary(
        entries,
        report,
        session,
        exported,
        time.time(),
        accepted=accept_problems,
        software=software,
        source=source or str(root),
        agency_statements=agency_statements,
    )
    json_path, text_path = files[-2], files[-1]
    doc = json.dumps(summary.as_dict(), indent=2, ensure_ascii=False) + "\n"
    json_path.write_text(doc, encoding="utf-8")
    text_path.write_text(summary.text(), encoding="utf-8")
    step(SUMMARY, 1, 1)
    return ExportResult(session, files, summary, exported)


class _Counter:
    def __init__(self, total: int, progress: Progress) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def step(self) -> None:
        self.done += 1
        self.progress(EXPORTING, self.done, self.total)


def _check_outputs(out: Path, files: list[Path], force: bool) -> None:
    if why := unwritable_dir(out):
        raise ExportError(f"output directory {out} is not writable: {why}")
    there = [f for f in files if f.exists()]
    if there and not force:
        names = ", ".join(f.name for f in there)
        raise ExportError(f"{out} already holds {names}: not overwritten (--force replaces them)")
    for f in there:  # replaced, or (a part an earlier export had) not left behind
        f.unlink()


def _parts(out: Path, session: str, tracks: list[str]) -> list[Path]:
    return [p for t in tracks for p in sorted(out.glob(f"{session}-{t}-part*.mp4"))]

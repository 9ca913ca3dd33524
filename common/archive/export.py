"""``unbroken export`` and ``unbroken store export``: one session of an :class:`Archive`
as one MP4 per track, by stream copy, with its custody summary beside them.

Each of the session's segments is read and decrypted once: what it holds is kept for
verification and its MP4 is muxed into files written beside their names. Then the
session is verified (its part of the chain, :func:`common.archive.verify.judge`);
evidence that fails is refused, naming each problem, and the files written are removed,
unless the user accepts it, and then the summary says so. Every packet is copied unchanged
and in order (PyAV, no decoding); only timestamps are set, by :mod:`evidence.splice`. The
summary is :mod:`evidence.custody`'s. What the export reads (and its errors) is
:mod:`common.archive.export_reading`; the copy, :mod:`common.archive.stream_copy`.

Example::

    result = export_session(DeviceDirectory(Path("/var/lib/unbroken")), None, Path("/tmp/c"))
    result.files      # [.../<session>-main.mp4, .../<session>-custody.json, ...-custody.txt]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing

from common.archive.archive import Archive, ArchiveError
from common.archive.export_reading import (
    NO_KEY,
    ExportError,
    ExportRefused,
    SegmentReader,
    pick_session,
    refusal,
)
from common.archive.stream_copy import WrittenTrack, mux_track
from common.archive.verify import ChainView, chain_view, judge
from common.files import create_new, unwritable_dir
from common.progress import VERIFYING, Progress
from evidence.custody import CustodySummary, blocking, custody_summary
from evidence.custody_tracks import ExportedTrack, SealedSegment, session_segments
from evidence.encryption import key_id
from evidence.seal import Entry
from evidence.verify import wrong_evidence_key
from evidence.verify_report import Report

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
    archive: Archive,
    session: str | None,
    out: Path,
    pubkey: nacl.signing.VerifyKey | None = None,
    accept_problems: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    software: str = "",
    source: str | None = None,
    agency_statements: Mapping[str, dict[str, Any]] | None = None,
    evidence_key: nacl.public.PrivateKey | None = None,
    no_key: str = NO_KEY,
) -> ExportResult:
    """Export ``session`` (None: the only one) of ``archive`` into ``out``, verified.
    ``evidence_key``: the agency's key the footage is encrypted to (R7), to read it;
    ``no_key``: how to give it, said if it is needed and not given. ``progress`` hears
    of each phase (VERIFYING, EXPORTING a step per segment, SUMMARY)."""
    step = progress or (lambda phase, done, total: None)
    try:
        session = pick_session(archive.sessions(), session, archive.describe())
        step(VERIFYING, 0, None)
        view = chain_view(archive, pubkey, session)
    except ArchiveError as e:
        raise ExportError(str(e)) from None
    if evidence_key is not None and (
        why := wrong_evidence_key(view.entries, key_id(evidence_key.public_key))
    ):
        raise ExportError(f"{why}: the footage cannot be decrypted with it")
    entries = view.valid()
    segments = session_segments(entries, session)
    files = output_names(out, session, list(segments))
    old_parts = _parts(out, session, list(segments))
    _check_outputs(out, files + old_parts, force)
    reader = SegmentReader(archive, evidence_key, view.files)
    # The tracks are written in a directory of the export's own (new, 0700), then moved to
    # their names: nothing an output directory holds (a link, planted) is written through.
    work = Path(tempfile.mkdtemp(prefix=".unbroken-export-", dir=out))
    try:
        written = _write(reader, segments, out, session, step, work)
        try:
            report = _verified(archive, view, reader, segments, session, accept_problems, no_key)
        except BaseException:
            for w in written.values():
                w.abandon()
            raise
        for f in [*files, *old_parts]:  # replaced, or (a part an earlier export had) not left
            f.unlink(missing_ok=True)
        for w in written.values():
            w.keep()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exported = {track: w.track for track, w in written.items()}
    files = [out / name for t in exported.values() for name, _ in t.files] + files[-2:]
    step(SUMMARY, 0, 1)
    before = archive.entries_of_kind({"assignment"}, view.first_seq)  # who was assigned
    summary = custody_summary(
        [e for _, e in before if isinstance(e, Entry)] + entries,
        report,
        session,
        exported,
        time.time(),
        accepted=accept_problems,
        software=software,
        source=source or archive.describe(),
        agency_statements=agency_statements,
    )
    json_path, text_path = files[-2], files[-1]
    doc = json.dumps(summary.as_dict(), indent=2, ensure_ascii=False) + "\n"
    for path, text in ((json_path, doc), (text_path, summary.text())):
        with create_new(path) as out_file:  # removed above: what is there now is not followed
            out_file.write(text.encode("utf-8"))
    step(SUMMARY, 1, 1)
    return ExportResult(session, files, summary, exported)


def _write(
    reader: SegmentReader,
    segments: dict[str, list[SealedSegment]],
    out: Path,
    session: str,
    step: Progress,
    work: Path,
) -> dict[str, WrittenTrack]:
    """Every track muxed in ``work``, each segment read once."""
    counted = _Counter(sum(len(s) for s in segments.values()), step)
    written: dict[str, WrittenTrack] = {}
    try:
        for track, segs in segments.items():
            written[track] = mux_track(reader, segs, out, session, track, counted.step, work)
    except BaseException:
        for w in written.values():
            w.abandon()
        raise
    return written


def _verified(
    archive: Archive,
    view: ChainView,
    reader: SegmentReader,
    segments: dict[str, list[SealedSegment]],
    session: str,
    accept: bool,
    no_key: str,
) -> Report:
    """The session's verification, from what the export read: ExportRefused if it failed
    and the user did not accept that, ExportError if the footage could not be read."""
    report = judge(archive, view, reader.facts)
    problems = blocking(report, session)
    absent = [
        s.manifest.file
        for segs in segments.values()
        for s in segs
        if not reader.usable(s.manifest.file)
        and not any(p.where == s.manifest.file for p in problems)
    ]
    if (problems or absent) and not accept:
        raise ExportRefused(refusal(problems, absent, session), problems)
    if reader.need_key:
        file, kid = reader.need_key[0]
        raise ExportError(
            f"{file} is encrypted to the agency's evidence key (key id {kid}): {no_key}"
        )
    return report


class _Counter:
    def __init__(self, total: int, progress: Progress) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def step(self) -> None:
        self.done += 1
        self.progress(EXPORTING, self.done, self.total)


def _check_outputs(out: Path, files: list[Path], force: bool) -> None:
    if why := unwritable_dir(out):
        raise ExportError(f"output directory {out} is not writable: {why}")
    there = [f for f in files if f.exists() or f.is_symlink()]  # a dangling link too
    if there and not force:
        names = ", ".join(f.name for f in there)
        raise ExportError(f"{out} already holds {names}: not overwritten (--force replaces them)")


def _parts(out: Path, session: str, tracks: list[str]) -> list[Path]:
    return [p for t in tracks for p in sorted(out.glob(f"{session}-{t}-part*.mp4"))]

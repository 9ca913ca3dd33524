"""``unbroken export``: one session of an evidence directory as one MP4 per track, by
stream copy, with its custody summary beside them.

The directory is verified first; evidence that fails is refused, naming each problem,
unless the user accepts it, and then the summary says so. Every packet of every segment
is copied unchanged and in order (PyAV, no decoding); only timestamps are set, by
:mod:`evidence.splice`. The summary is :mod:`evidence.custody`'s.

Example::

    result = export_session(Path("/var/lib/unbroken"), None, Path("/tmp/case-17"))
    result.files      # [.../<session>-main.mp4, .../<session>-custody.json, ...-custody.txt]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import nacl.public

from agent import evidence_dir
from agent.evidence_dir import EvidenceDirError, load_chain, unsafe_path, verify_dir
from common.files import unwritable_dir
from common.progress import VERIFYING, Progress
from evidence.custody import CustodySummary, blocking, custody_summary, sessions_in
from evidence.custody_tracks import ExportedTrack, SealedSegment, session_segments
from evidence.encryption import EncryptionError, decrypt, is_encrypted, key_id
from evidence.seal import Entry
from evidence.splice import Placement, SegmentPackets, Splicer, gap_between
from evidence.verify import wrong_evidence_key
from evidence.verify_report import Problem

Step = Callable[[], None]

# The phases an export reports (common.progress), in order.
EXPORTING, SUMMARY = "exporting", "writing the custody summary"

# How to give the key, said when footage is encrypted and none was given.
NO_KEY = (
    "give the agency's evidence key with --evidence-key FILE (AGENCY/private/evidence.key), "
    "or export where it is kept from the store (unbroken store export)"
)

# An ordinary MP4 (one moov, at the front so a browser starts playing at once).
_OUT_OPTIONS = {"movflags": "+faststart"}


class ExportError(Exception):
    """The export cannot be made (no such session, outputs in the way, media unusable)."""


class ExportRefused(ExportError):
    """The evidence failed verification and the user did not accept that."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


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


def _part_name(session: str, track: str, part: int) -> str:
    return f"{session}-{track}.mp4" if part == 1 else f"{session}-{track}-part{part}.mp4"


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
        entries = _entries(root)
    except EvidenceDirError as e:
        raise ExportError(str(e)) from None
    session = _pick(sessions_in(entries), session, root)
    problems = blocking(report, session)
    segments = session_segments(entries, session)
    absent = [
        s.manifest.file
        for segs in segments.values()
        for s in segs
        if not _usable(root, s.manifest.file)
        and not any(p.where == s.manifest.file for p in problems)
    ]
    if (problems or absent) and not accept_problems:
        raise ExportRefused(_refusal(problems, absent, session), problems)
    _check_key(root, segments, evidence_key, no_key)
    files = output_names(out, session, list(segments))
    _check_outputs(out, files + _parts(out, session, list(segments)), force)
    counted = _Counter(sum(len(s) for s in segments.values()), step)
    reader = _Reader(root, evidence_key, accept_problems)
    exported = {
        track: _mux_track(reader, segs, out, session, track, counted.step)
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


def evidence_key_problem(root: Path, key: nacl.public.PrivateKey) -> str | None:
    """Why ``key`` cannot decrypt ``root``'s segments (None: they are sealed to it)."""
    return wrong_evidence_key(load_chain(root), key_id(key.public_key))


class _Counter:
    def __init__(self, total: int, progress: Progress) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def step(self) -> None:
        self.done += 1
        self.progress(EXPORTING, self.done, self.total)


def read_evidence_key(path: Path) -> nacl.public.PrivateKey:
    """The agency's evidence key (``AGENCY/private/evidence.key``), or ExportError."""
    try:
        return evidence_dir.read_evidence_key(path)
    except (EvidenceDirError, OSError) as e:
        raise ExportError(str(e)) from None


def _entries(root: Path) -> list[Entry]:
    """The chain's valid entries in order, one per sequence number (verification has
    named any duplicate)."""
    by_seq: dict[int, Entry] = {}
    for _, e in load_chain(root):
        if isinstance(e, Entry):
            by_seq.setdefault(e.seq, e)
    return [by_seq[s] for s in sorted(by_seq)]


def _pick(sessions: list[str], wanted: str | None, root: Path) -> str:
    listing = ", ".join(sessions) or "none"
    if wanted is None:
        if len(sessions) != 1:
            raise ExportError(
                f"{root} holds {len(sessions)} sessions ({listing}): name one with --session"
            )
        return sessions[0]
    if wanted not in sessions:
        raise ExportError(f"{root} holds no session {wanted!r}; its sessions: {listing}")
    return wanted


def _usable(root: Path, file: str) -> bool:
    return unsafe_path(root, file) is None and (root / file).is_file()


def _check_key(
    root: Path,
    segments: Mapping[str, list[SealedSegment]],
    key: nacl.public.PrivateKey | None,
    no_key: str,
) -> None:
    """Encrypted footage needs the agency's evidence key: say so before writing anything."""
    if key is not None:
        return
    for segs in segments.values():
        for s in segs:
            path = root / s.manifest.file
            if _usable(root, s.manifest.file):
                with open(path, "rb") as f:
                    head = f.read(16)
                if is_encrypted(head):
                    raise ExportError(
                        f"{s.manifest.file} is encrypted to the agency's evidence key (key id "
                        f"{head[8:16].hex()}): {no_key}"
                    )


class _Reader:
    """A segment's MP4, decrypted if it is encrypted. A file that cannot be read stops
    the export, unless the user accepted problems: then it is left out, and said."""

    def __init__(self, root: Path, key: nacl.public.PrivateKey | None, accept: bool) -> None:
        self.root, self.key, self.accept = root, key, accept

    def open(self, file: str) -> tuple[Any, str | None]:
        """The MP4 to demux (a path or the decrypted bytes), or None and why not."""
        path = self.root / file
        if not _usable(self.root, file):
            return None, "the file is not in the evidence directory"
        with open(path, "rb") as f:
            encrypted = is_encrypted(f.read(16))
        if not encrypted:
            return str(path), None
        try:
            assert self.key is not None  # _check_key saw to it
            return io.BytesIO(decrypt(path.read_bytes(), self.key).plain), None
        except EncryptionError as e:
            if not self.accept:
                raise ExportError(f"{file}: {e}") from None
            return None, f"does not decrypt: {e}"


def _refusal(problems: list[Problem], absent: list[str], session: str) -> str:
    lines = [f"session {session}: the evidence failed verification, nothing was exported:"]
    lines += [f"  {p.code}: {p.where}: {p.message}" for p in problems]
    if absent:
        lines.append(
            f"  {len(absent)} segment(s) are no longer here (freed after the agency's receipt): "
            "export the session from the store (unbroken store export)"
        )
    lines.append("--accept-problems exports it anyway; the custody summary then says why not")
    return "\n".join(lines)


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


# -- stream copy -------------------------------------------------------------------------


class _NewHeaders(Exception):
    """A segment encoded with other codec headers than the file's (the encoders restarted
    with other settings): one MP4 track cannot hold both, so a new file begins."""


def _mux_track(
    reader: _Reader, segs: list[SealedSegment], out: Path, session: str, track: str, step: Step
) -> ExportedTrack:
    """Every packet of the track's segments, in order, into its file (and a further part
    where the codec headers change). Written beside and renamed once all is written, so a
    failed export leaves no half file."""
    fps = round(segs[0].manifest.video.fps)
    done: list[tuple[_Muxer, float]] = []
    placed: dict[int, Placement] = {}
    part_of: dict[int, int] = {}
    left_out: dict[int, str] = {}
    mux: _Muxer | None = None
    prev = None

    def part() -> _Muxer:
        name = _part_name(session, track, len(done) + 1)
        return _Muxer(out / f".{name}.partial", out / name, fps)

    try:
        for s in segs:
            m = s.manifest
            media, why = reader.open(m.file)
            if why is not None:
                left_out[m.index] = why
                prev = None
            else:
                mux = mux or part()
                try:
                    placed[m.index] = mux.add(media, m.file, gap_between(prev, m))
                except _NewHeaders:
                    done.append((mux, mux.close()))
                    mux = part()
                    media, _ = reader.open(m.file)
                    placed[m.index] = mux.add(media, m.file, True)
                part_of[m.index] = len(done)
                prev = m
            step()
        if mux is not None:
            done.append((mux, mux.close()))
    except BaseException:
        for m_ in [*(d for d, _ in done), *([mux] if mux else [])]:
            m_.abandon()
        raise
    for m_, _ in done:
        os.replace(m_.path, m_.dest)
    files = [(m_.dest.name, duration) for m_, duration in done]
    rate = done[0][0].rate if done else 0
    return ExportedTrack(files, placed, part_of, left_out, fps, rate)


class _Muxer:
    """One output MP4; the first segment's streams are the template for the rest."""

    def __init__(self, path: Path, dest: Path, fps: int) -> None:
        self.path, self.dest, self.fps = path, dest, fps
        self.out: Any = av.open(str(path), "w", format="mp4", options=_OUT_OPTIONS)
        self.video: Any = None
        self.audio: Any = None
        self.headers: tuple[bytes | None, bytes | None] | None = None
        self.rate = 0
        self.splicer: Splicer | None = None
        self.held: Any = None  # the newest audio packet, not yet muxed

    def add(self, media: Any, path: str, gap_before: bool) -> Placement:
        """Copy one segment's packets (``media``: its file or its decrypted MP4)."""
        try:
            with av.open(media, "r", format="mp4") as c:
                return self._copy(c, path, gap_before)
        except av.FFmpegError as e:
            raise ExportError(f"{path}: cannot be read as MP4: {e}") from None

    def _copy(self, c: Any, path: str, gap_before: bool) -> Placement:
        if not c.streams.video:
            raise ExportError(f"{path}: no video stream")
        vs = c.streams.video[0]
        a_s = c.streams.audio[0] if c.streams.audio else None
        self._streams(vs, a_s, path)
        assert self.splicer is not None
        packets = [p for p in c.demux() if p.size and p.pts is not None]
        video = [p for p in packets if p.stream.index == vs.index]
        audio = [p for p in packets if a_s is not None and p.stream.index == a_s.index]
        if not video:
            raise ExportError(f"{path}: no video frames")
        origin = min(p.pts for p in video) * vs.time_base  # seconds: the file's first frame

        def samples(p: Any) -> int:
            return round((p.pts * p.time_base - origin) * self.rate)

        seg = SegmentPackets(
            len(video),
            samples(audio[0]) if audio else None,
            samples(audio[-1]) if audio else None,
        )
        placement = self.splicer.place(seg, gap_before)
        # seconds to add to each stream's timestamps, as a whole number of its ticks
        shift_v = _ticks(Fraction(placement.video, self.fps) - origin, vs.time_base, path)
        shift_a = (
            _ticks(Fraction(placement.audio, self.rate) - origin, a_s.time_base, path)
            if a_s is not None
            else 0
        )
        for p in packets:
            is_video = p.stream.index == vs.index
            shift = shift_v if is_video else shift_a
            p.dts = (p.pts if p.dts is None else p.dts) + shift
            p.pts += shift
            p.stream = self.video if is_video else self.audio
            if is_video:
                self.out.mux(p)
            else:
                self._hold(p)
        return placement

    def _hold(self, p: Any) -> None:
        """Keep back the newest audio packet: only the last one's duration counts in an
        MP4 (the others last until the next), and it is set at :meth:`close`."""
        if self.held is not None:
            self.out.mux(self.held)
        self.held = p

    def _streams(self, vs: Any, a_s: Any, path: str) -> None:
        """Open the output's streams from the first segment; every later segment must be
        encoded alike (the same codec headers), or one file cannot hold them."""
        ctx = vs.codec_context
        headers = (ctx.extradata, a_s.codec_context.extradata if a_s is not None else None)
        if self.headers is None:
            self.headers = headers
            self.video = self.out.add_stream_from_template(vs)
            if a_s is not None:
                self.audio = self.out.add_stream_from_template(a_s)
                self.rate = a_s.codec_context.sample_rate
            frame = (a_s.codec_context.frame_size if a_s is not None else 0) or 1024
            self.splicer = Splicer(self.fps, self.rate or self.fps, frame)
            return
        if headers != self.headers or (a_s is not None) != (self.audio is not None):
            raise _NewHeaders(str(path))

    def close(self) -> float:
        """Finish the file; the sound ends with the picture (a segment's last audio packet
        was cut to end at the cut on its own timeline, which may not be the export's)."""
        duration = self.splicer.duration if self.splicer else 0.0
        if self.held is not None and self.splicer is not None:
            p, self.held = self.held, None
            end = Fraction(self.splicer.next_frame, self.fps) / p.time_base
            frame = Fraction(self.splicer.aac_frame, self.rate) / p.time_base
            if 0 < end - p.pts <= frame:
                p.duration = round(end - p.pts)
            self.out.mux(p)
        self.out.close()
        return duration

    def abandon(self) -> None:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.out.close()
        self.path.unlink(missing_ok=True)


def _ticks(seconds: Fraction, time_base: Fraction, path: str) -> int:
    ticks = seconds / time_base
    if ticks.denominator != 1:
        raise ExportError(f"{path}: timestamps do not fall on the stream's time base")
    return int(ticks)

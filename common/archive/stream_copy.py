"""Stream copy: every packet of a track's segments, in order and unchanged (PyAV, no
decoding), into its MP4 file, and a further part where the codec headers change. Only
timestamps are set, where :mod:`evidence.splice` places each segment."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from common.archive.export_reading import ExportError, SegmentReader
from evidence.custody_tracks import ExportedTrack, SealedSegment
from evidence.splice import Placement, SegmentPackets, Splicer, gap_between

Step = Callable[[], None]

# An ordinary MP4 (one moov, at the front so a browser starts playing at once).
_OUT_OPTIONS = {"movflags": "+faststart"}


def _part_name(session: str, track: str, part: int) -> str:
    return f"{session}-{track}.mp4" if part == 1 else f"{session}-{track}-part{part}.mp4"


class _NewHeaders(Exception):
    """A segment encoded with other codec headers than the file's (the encoders restarted
    with other settings): one MP4 track cannot hold both, so a new file begins."""


@dataclass
class WrittenTrack:
    r"""A track written beside its files (``.partial``): kept by :meth:`keep` once the
    export is decided, or :meth:`abandon`\ ed, leaving nothing."""

    track: ExportedTrack
    parts: list[_Muxer]

    def keep(self) -> None:
        for m in self.parts:
            os.replace(m.path, m.dest)

    def abandon(self) -> None:
        for m in self.parts:
            m.path.unlink(missing_ok=True)


def mux_track(
    reader: SegmentReader,
    segs: list[SealedSegment],
    out: Path,
    session: str,
    track: str,
    step: Step,
    work: Path,
) -> WrittenTrack:
    """Every packet of the track's segments, in order, into its file (and a further part
    where the codec headers change), each segment read once. Written in ``work`` (the
    export's own new directory: nothing planted in ``out`` is written through) and moved
    to its name in ``out`` once kept, so a failed or refused export leaves no file."""
    fps = round(segs[0].manifest.video.fps)
    done: list[tuple[_Muxer, float]] = []
    placed: dict[int, Placement] = {}
    part_of: dict[int, int] = {}
    left_out: dict[int, str] = {}
    mux: _Muxer | None = None
    prev = None

    def part() -> _Muxer:
        name = _part_name(session, track, len(done) + 1)
        return _Muxer(work / f"{name}.partial", out / name, fps)

    try:
        for s in segs:
            m = s.manifest
            media, why = reader.open(m.file)
            if media is None:
                left_out[m.index] = why or "not read"
                prev = None
            else:
                mux = mux or part()
                try:
                    placed[m.index] = mux.add(media, m.file, gap_between(prev, m))
                except _NewHeaders:
                    done.append((mux, mux.close()))
                    mux = part()
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
    files = [(m_.dest.name, duration) for m_, duration in done]
    rate = done[0][0].rate if done else 0
    exported = ExportedTrack(files, placed, part_of, left_out, fps, rate)
    return WrittenTrack(exported, [m_ for m_, _ in done])


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

    def add(self, media: bytes, path: str, gap_before: bool) -> Placement:
        """Copy one segment's packets (``media``: its MP4, decrypted)."""
        try:
            with av.open(io.BytesIO(media), "r", format="mp4") as c:
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

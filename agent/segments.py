"""Segmenting: footage cut into segments, the pre-event buffer, and sealing a segment.

The segment being written lives in ``spool/`` (one file per track, cut at the same frame,
each with a sidecar for power-cut recovery). Outside a session closed segments stay in the
spool as the pre-event buffer and age out; inside one each closed segment is moved into
``segments/`` and its manifest sealed (:meth:`Segmenter.seal`).

Example::

    seg = Segmenter(root, config, chain, session=lambda: rec.session, badges=lambda: rec.badges)
    seg.add(images, audio, audio_ok=True, gnss=state, captured=t, wall=w)   # one frame
    seg.opened(session)        # pre-event footage becomes the session's first segments
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.chain import ChainWriter
from agent.evidence_dir import SPOOL, segment_name
from agent.media import AUDIO_CODEC, VIDEO_CODEC, SegmentWriter, WrittenSegment
from agent.recovery import sidecar, write_sidecar
from agent.session import OpenSession
from common.settings import MAIN_TRACK, DeviceConfig
from device.clock import Clock
from device.gnss import GnssState
from evidence.manifest import Audio, Location, SegmentManifest, Video
from evidence.seal import Entry, Moment


@dataclass
class OpenSegment:
    """The segment being written — one file per track, cut at the same frame — and what
    its manifests will say about where it was recorded."""

    writers: dict[str, SegmentWriter]
    start: Moment
    positions: list[tuple[float, float] | None] = field(default_factory=list)
    max_fix_age: float | None = None
    audio_ok: bool = True

    @property
    def frames(self) -> int:
        return next(iter(self.writers.values())).frames

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
class _Buffered:
    """A closed pre-event segment waiting in the spool: sealed if a session opens in time."""

    written: dict[str, WrittenSegment]
    start: Moment
    end: Moment
    location: Location
    audio_ok: bool


class Segmenter:
    def __init__(
        self,
        root: Path,
        config: DeviceConfig,
        chain: ChainWriter,
        clock: Clock,
        session: Callable[[], OpenSession | None],
        badges: Callable[[], list[str]],
    ) -> None:
        self.root = root
        self.config = config
        self.chain = chain
        self.clock = clock
        self._session = session
        self._badges = badges
        self.tracks = config.tracks
        self.segment: OpenSegment | None = None
        self._buffer: deque[_Buffered] = deque()
        self.frame_no = 0  # frames since capture started: the media timeline
        self.degraded = False  # lower bitrate: the disk is nearly full
        self._frames_per_segment = config.recording.fps * config.recording.segment_seconds
        (root / SPOOL).mkdir(parents=True, exist_ok=True)

    # -- the frame loop -----------------------------------------------------------------

    def add(
        self,
        images: Mapping[str, np.ndarray],
        audio: np.ndarray,
        audio_ok: bool,
        gnss: GnssState,
        captured: float,
        wall: float,
    ) -> bool:
        """One frame on every track; True when the segment is long enough to :meth:`end`.
        Raises OSError (disk) or av.FFmpegError (encoder): the caller decides what was lost."""
        seg = self.segment or self.begin(captured, wall)
        for track, writer in seg.writers.items():
            writer.add(images[track], audio)
        seg.audio_ok &= audio_ok
        seg.note_position(gnss, captured)
        self.frame_no += 1
        return seg.frames >= self._frames_per_segment

    def skip(self) -> None:
        """A frame not kept (paused, disk full, encoder failed): the timeline goes on."""
        self.frame_no += 1

    def begin(self, mono: float, wall: float) -> OpenSegment:
        rec = self.config.recording
        if self.degraded:  # stretch the space left rather than stop recording
            rec = rec.model_copy(update={"video_bitrate": self.config.storage.degrade_bitrate})
        writers: dict[str, SegmentWriter] = {}
        try:
            for track in self.tracks:
                path = self.root / SPOOL / f"{self.frame_no:012d}-{track}.mp4"
                writers[track] = SegmentWriter(path, rec, first_frame=self.frame_no)
        except BaseException:
            for w in writers.values():
                w.abandon()
                self.discard(w.path)
            raise
        self.segment = OpenSegment(writers, Moment(wall, mono, self.clock.synced()))
        self._write_sidecar(self.segment)
        return self.segment

    def end(self) -> None:
        """Close the segment being written: sealed in a session, buffered outside one."""
        seg = self.segment
        assert seg
        self.segment = None
        written = {track: w.close() for track, w in seg.writers.items()}
        frames = next(iter(written.values())).frames
        fps = self.config.recording.fps
        end = Moment(
            seg.start.wall + frames / fps, seg.start.mono + frames / fps, self.clock.synced()
        )
        location = seg.location()
        if self._session():
            for track, w in written.items():
                self.seal(w, seg.start, end, location, seg.audio_ok, track)
            return
        self._buffer.append(_Buffered(written, seg.start, end, location, seg.audio_ok))
        window = self.config.recording.prebuffer_seconds
        while self._buffer and self._buffer[0].end.mono <= end.mono - window:
            for w in self._buffer.popleft().written.values():
                self.discard(w.path)

    def abandon(self) -> Moment | None:
        """Give up the segment being written; returns when its footage began (the gap
        starts there: what it held is not sealed)."""
        seg, self.segment = self.segment, None
        if seg is None:
            return None
        for writer in seg.writers.values():
            writer.abandon()
            self.discard(writer.path)
        return seg.start

    # -- sessions -------------------------------------------------------------------------

    def opened(self, at: Moment) -> None:
        """A session opened at ``at``: pre-event footage within the window becomes its first
        segments, so arrival is on record; the segment being written now belongs to it."""
        window = self.config.recording.prebuffer_seconds
        for b in self._buffer:
            for track, written in b.written.items():
                if b.end.mono > at.mono - window:
                    self.seal(written, b.start, b.end, b.location, b.audio_ok, track)
                else:
                    self.discard(written.path)
        self._buffer.clear()
        if self.segment is None:
            # From idle (no buffer): start now, and fast, so the trigger is on record.
            self.begin(at.mono, at.wall)
        else:
            self._write_sidecar(self.segment)

    def seal(
        self,
        w: WrittenSegment,
        start: Moment,
        end: Moment,
        location: Location,
        audio_ok: bool,
        track: str = MAIN_TRACK,
        recovered: bool = False,
    ) -> Entry:
        """Move a closed segment into the open session and seal its manifest."""
        s = self._session()
        assert s
        index = s.next_index.get(track, 0)
        rel = segment_name(s.id, index, track)
        self.chain.place_segment(w.path, self.root / rel)
        sidecar(w.path).unlink(missing_ok=True)
        rec = self.config.recording
        before_open = max(0.0, s.opened.mono - start.mono)
        manifest = SegmentManifest(
            index=index,
            file=rel,
            sha256=w.sha256,
            size=w.size,
            start=start,
            end=end,
            video=Video(
                VIDEO_CODEC,
                rec.width,
                rec.height,
                rec.fps,
                rec.keyframe_seconds,
                w.bitrate,
                w.frames,
                w.first_frame,
            ),
            audio=Audio(AUDIO_CODEC, rec.audio_rate, 1, w.audio_samples)
            if audio_ok and w.audio_samples
            else None,
            prebuffer_seconds=round(before_open, 6),
            location=location,
            badges=list(self._badges()),  # as burned into the picture now
            track=track,
            recovered=recovered,
        )
        s.next_index[track] = index + 1
        return self.chain.seal_body(manifest, s.id)

    # -- the spool ---------------------------------------------------------------------------

    def spooled(self) -> list[Path]:
        return sorted((self.root / SPOOL).glob("*.mp4"))

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)

    def clean_spool(self) -> None:
        # Spooled footage outside any session is not evidence and may go.
        for p in self.spooled():
            self.discard(p)

    def _write_sidecar(self, seg: OpenSegment) -> None:
        session = self._session()
        for track, writer in seg.writers.items():
            write_sidecar(
                writer.path,
                {
                    "track": track,
                    "first_frame": writer.first_frame,
                    "bitrate": writer.bitrate,
                    "start": seg.start.as_dict(),
                    "session": session.id if session else None,
                },
            )

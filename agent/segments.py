"""Segmenting: footage cut into segments, the pre-event buffer, and sealing a segment.

The segment being written lives in ``spool/`` (one file per track, cut at the same frame,
each with a sidecar for power-cut recovery). Each track's encoders run on across segments
(:class:`agent.media.TrackEncoder`); a segment is cut where the next one's keyframe is
forced, and is closed once the encoders have handed over all of its audio, a frame or two
later. An explicit :meth:`Segmenter.end` (session closed, pause, disk full, shutdown)
flushes the encoders and closes everything at once. Outside a session closed segments stay in the
spool as the pre-event buffer and age out; inside one each closed segment is moved into
``segments/`` and its manifest sealed (:meth:`Segmenter.seal`). What an open segment holds
is :mod:`agent.open_segment`'s, what its manifest says :mod:`agent.segment_manifest`'s.

Example::

    seg = Segmenter(root, config, chain, session=lambda: rec.session, badges=lambda: rec.badges)
    seg.add(images, audio, audio_ok=True, gnss=state, captured=t, wall=w)   # one frame, cut
                                                                    # when long enough
    seg.opened(session)        # pre-event footage becomes the session's first segments
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import av
import numpy as np
from nacl.public import PublicKey

from agent.chain import ChainWriter
from agent.fragments import sidecar, write_sidecar
from agent.media import EncoderChoice, SegmentFile, TrackEncoder, WrittenSegment, configured_encoder
from agent.open_segment import Buffered, OpenSegment, owner
from agent.segment_manifest import segment_manifest
from agent.session import OpenSession
from common.settings import MAIN_TRACK, DeviceConfig
from device.clock import Clock
from device.gnss import GnssState
from evidence.entries import Event
from evidence.layout import SPOOL, segment_name
from evidence.manifest import Location
from evidence.seal import Entry, Moment


class Segmenter:
    def __init__(
        self,
        root: Path,
        config: DeviceConfig,
        chain: ChainWriter,
        clock: Clock,
        session: Callable[[], OpenSession | None],
        badges: Callable[[], list[str]],
        agency: PublicKey | None = None,
    ) -> None:
        """``agency``: the key every file is encrypted to as it is written (None: stored
        in the clear, which each manifest then says)."""
        self.root = root
        self.agency = agency
        self.config = config
        self.chain = chain
        self.clock = clock
        self._session = session
        self._badges = badges
        self.tracks = config.tracks
        self.segment: OpenSegment | None = None
        self._closing: list[OpenSegment] = []  # cut, waiting for the rest of their audio
        self._encoders: dict[str, TrackEncoder] = {}
        self.encoder = EncoderChoice(configured_encoder(config.recording.encoder))
        self._seen_video: dict[str, int] = {}  # the latest timestamp each track handed over
        self._seen_audio: dict[str, int] = {}
        self._buffer: deque[Buffered] = deque()
        self.frame_no = 0  # frames since capture started: the media timeline
        self.degraded = False  # lower bitrate: the disk is nearly full (from the next cut)
        self.load_bitrate: int | None = None  # the machine is overloaded (from the next cut)
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
    ) -> None:
        """One frame on every track; a full segment is cut here, at a forced keyframe.
        Raises OSError (disk) or av.FFmpegError (encoder): the caller decides what was lost."""
        seg = self.segment
        if seg is not None and seg.frames >= self._frames_per_segment:
            self._closing.append(seg)
            seg = self.segment = None
        if seg is None:
            seg = self.begin(captured, wall)
        for track, encoder in self._encoders.items():
            video, sound = encoder.encode(images[track], audio, keyframe=seg.frames == 0)
            self._route(track, video, sound)
        seg.frames += 1
        seg.audio_ok &= audio_ok
        seg.note_position(gnss, captured)
        self.frame_no += 1
        self._close_handed_over()

    def skip(self, frames: int = 1) -> None:
        """Frames not kept (paused, disk full, encoder failed, time lost to an overload):
        the timeline goes on."""
        self.frame_no += frames

    def begin(self, mono: float, wall: float) -> OpenSegment:
        bitrate = self._bitrate()
        if self._encoders and next(iter(self._encoders.values())).bitrate != bitrate:
            self.end()  # a new target: the encoders start afresh
        if not self._encoders:
            rec = self.config.recording
            try:
                for track in self.tracks:
                    self._encoders[track] = self.encoder.open(rec, bitrate)
            except BaseException:
                self._drop_encoders()
                raise
            if fallback := self.encoder.take_fallback():
                wanted, why = fallback
                said = {"wanted": wanted, "used": self.encoder.codec, "reason": why}
                session = self._session()
                self.chain.seal_body(
                    Event("encoder_fallback", said), session.id if session else None
                )
        writers: dict[str, SegmentFile] = {}
        try:
            for track, encoder in self._encoders.items():
                path = self.root / SPOOL / f"{self.frame_no:012d}-{track}.mp4"
                writers[track] = SegmentFile(path, encoder, self.frame_no, self.agency)
        except BaseException:
            for w in writers.values():
                w.abandon()
                self.discard(w.path)
            raise
        self.segment = OpenSegment(writers, Moment(wall, mono, self.clock.synced()))
        self._write_sidecar(self.segment)
        return self.segment

    def end(self) -> None:
        """Close every segment now: the encoders are flushed, and start afresh next frame.
        Each is sealed in a session, buffered outside one."""
        if self.segment is not None:
            self._closing.append(self.segment)
            self.segment = None
        for track, encoder in self._encoders.items():
            self._route(track, *encoder.flush())
        ends = {t: (e.frames, e.samples) for t, e in self._encoders.items()}
        self._drop_encoders()
        while self._closing:
            seg = self._closing.pop(0)
            nxt = self._closing[0] if self._closing else None
            self._closed(seg, nxt, ends)

    def abandon(self) -> Moment | None:
        """Give up the segments being written, and the encoders; returns when their footage
        began (the gap starts there: what they held is not sealed)."""
        segs = [*self._closing, *([self.segment] if self.segment else [])]
        self._closing, self.segment = [], None
        self._drop_encoders()
        for seg in segs:
            for writer in seg.writers.values():
                writer.abandon()
                self.discard(writer.path)
        return segs[0].start if segs else None

    def _bitrate(self) -> int:
        # degraded: stretch the space left rather than stop recording; overloaded: a
        # lighter load for an encoder that cannot keep real time
        rec, storage = self.config.recording, self.config.storage
        rate = storage.degrade_bitrate if self.degraded else rec.video_bitrate
        return min(rate, self.load_bitrate or rate)

    def _drop_encoders(self) -> None:
        for encoder in self._encoders.values():
            encoder.close()
        self._encoders = {}
        self._seen_video, self._seen_audio = {}, {}  # new encoders count from zero

    def _route(self, track: str, video: list[av.Packet], sound: list[av.Packet]) -> None:
        """Each packet into the segment its timestamp falls in (the oldest one takes the
        audio encoder's priming, which comes before the first frame)."""
        segs = [*self._closing, *([self.segment] if self.segment else [])]
        writers = [s.writers[track] for s in segs]
        for p in video:
            pts = p.pts  # read first: muxing rewrites it
            owner(writers, pts, "video_origin").mux_video(p)
            self._seen_video[track] = max(self._seen_video.get(track, -1), pts or 0)
        for p in sound:
            pts = p.pts
            owner(writers, pts, "audio_origin").mux_audio(p)
            self._seen_audio[track] = max(self._seen_audio.get(track, -1), pts or 0)

    def _close_handed_over(self) -> None:
        """Close the cut segments whose every packet the encoders have handed over."""
        while self._closing:
            seg = self._closing[0]
            nxt = self._closing[1] if len(self._closing) > 1 else self.segment
            assert nxt is not None
            done = all(
                self._seen_video.get(t, -1) >= w.video_origin
                and self._seen_audio.get(t, -1) >= w.audio_origin
                for t, w in nxt.writers.items()
            )
            if not done:
                return
            self._closing.pop(0)
            self._closed(seg, nxt, {})

    def _closed(
        self, seg: OpenSegment, nxt: OpenSegment | None, ends: Mapping[str, tuple[int, int]]
    ) -> None:
        """Close one segment's files: sealed in a session, buffered outside one.
        Its audio ends where ``nxt`` starts, or (the last) where the encoders stopped.
        In a session the closing and sealing (fsyncs, journal) go to the chain's own thread:
        what they need is taken now, and the frame loop goes on."""
        audio_end = {
            track: nxt.writers[track].audio_origin if nxt else ends[track][1]
            for track in seg.writers
        }
        frames = seg.frames
        fps = self.config.recording.fps
        end = Moment(
            seg.start.wall + frames / fps, seg.start.mono + frames / fps, self.clock.synced()
        )
        location = seg.location()
        session, badges = self._session(), list(self._badges())
        if session:

            def close_and_seal() -> None:
                for track, w in seg.writers.items():
                    closed = w.close(audio_end[track])
                    self.seal(
                        closed, seg.start, end, location, seg.audio_ok, track,
                        session=session, badges=badges,
                    )  # fmt: skip

            self.chain.later(close_and_seal)
            return
        written = {track: w.close(audio_end[track]) for track, w in seg.writers.items()}
        self._buffer.append(Buffered(written, seg.start, end, location, seg.audio_ok))
        window = self.config.recording.prebuffer_seconds
        while self._buffer and self._buffer[0].end.mono <= end.mono - window:
            for w in self._buffer.popleft().written.values():
                self.discard(w.path)

    # -- sessions -------------------------------------------------------------------------

    def opened(self, at: Moment) -> None:
        """A session opened at ``at``: pre-event footage within the window becomes its first
        segments, so arrival is on record; the segment being written now belongs to it."""
        window = self.config.recording.prebuffer_seconds
        session = self._session()
        for b in self._buffer:
            for track, written in b.written.items():
                if b.end.mono > at.mono - window:  # sealed on the chain's thread: no wait
                    self.chain.later(
                        partial(
                            self.seal, written, b.start, b.end, b.location, b.audio_ok, track,
                            session=session,
                        )
                    )  # fmt: skip
                else:
                    self.discard(written.path)
        self._buffer.clear()
        if self.segment is None:
            # From idle (no buffer): start now, and fast, so the trigger is on record.
            self.begin(at.mono, at.wall)
        else:
            self._write_sidecar(self.segment)
        for seg in self._closing:
            self._write_sidecar(seg)

    def seal(
        self,
        w: WrittenSegment,
        start: Moment,
        end: Moment,
        location: Location,
        audio_ok: bool,
        track: str = MAIN_TRACK,
        recovered: bool = False,
        session: OpenSession | None = None,
        badges: list[str] | None = None,
    ) -> Entry:
        """Move a closed segment into the open session (or ``session``, the one it was
        closed in) and seal its manifest; ``badges``: those burned into its picture."""
        self.chain.drain()  # sealed in order, and never two at once on one session
        s = session or self._session()
        assert s
        index = s.next_index.get(track, 0)
        rel = segment_name(s.id, index, track)
        self.chain.place_segment(w.path, self.root / rel)
        sidecar(w.path).unlink(missing_ok=True)
        rec = self.config.recording
        before_open = max(0.0, s.opened.mono - start.mono)
        manifest = segment_manifest(
            w,
            index,
            rel,
            start,
            end,
            location,
            audio_ok,
            rec,
            before_open,
            list(self._badges()) if badges is None else badges,  # as burned in
            track,
            recovered,
        )
        s.next_index[track] = index + 1
        return self.chain.seal_body(manifest, s.id)

    # -- the spool ---------------------------------------------------------------------------

    def spooled(self) -> list[Path]:
        return sorted((self.root / SPOOL).glob("*.mp4"))

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)

    def clean_spool(self) -> None:  # spooled footage outside any session is not evidence
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

"""One frame of recording: capture, watermark and encode, with every fault an
interruption rather than a stop.

A failed camera is replaced by black frames (the audio goes on), a failed microphone by
silence, a full disk pauses writing, a failed encoder starts afresh on the next frame;
each is an interruption of the open session (:mod:`agent.continuity`), ended when the
fault clears. A machine that cannot keep real time steps its load down (a lower bitrate,
then each picture kept for a few frames); time it loses anyway is an ``overload``
interruption, sealed between the footage either side (:mod:`agent.overload` decides).

Example::

    frames = FrameRecorder(config, hardware, clock, capture, segments, continuity)
    frames.check_storage()                 # once a second
    frames.record(badges, room_id, paused=False)
    frames.lost                   # True: real time was lost before it (sealed as such)
"""

from __future__ import annotations

import errno

import av
import numpy as np

from agent.capture import Capture
from agent.continuity import Continuity
from agent.overload import LoadGovernor, time_lost
from agent.segments import Segmenter
from common.settings import DeviceConfig
from device.camera import VideoFrame
from device.clock import Clock
from device.hardware import Hardware
from device.microphone import MicrophoneError
from evidence.seal import Moment


class FrameRecorder:
    """Records one frame at a time from the hardware (the loop that calls it each frame
    interval is :class:`agent.loop.FrameLoop`)."""

    def __init__(
        self,
        config: DeviceConfig,
        hardware: Hardware,
        clock: Clock,
        capture: Capture,
        segments: Segmenter,
        continuity: Continuity,
    ) -> None:
        self.hw = hardware
        self.clock = clock
        self.capture = capture
        self.segments = segments
        self.continuity = continuity
        rec = config.recording
        self.fps = rec.fps
        self._silence = np.zeros(rec.audio_rate // rec.fps, np.int16)
        self._storage_full = False
        self.lost_seconds = rec.overload.lost_seconds
        self.governor = LoadGovernor(rec.overload, rec.fps, rec.video_bitrate)
        self._held: dict[str, np.ndarray] | None = None  # the last pictures, watermarked
        self._held_for = 0  # frames they have been kept for
        self.lost = False  # real time was lost before the last frame (sealed as such)
        self._waited = 0.0  # of the frame's time, spent waiting for a camera or microphone

    def check_storage(self) -> None:
        if self.hw.storage is None:
            return
        check = self.continuity.check_storage(self.hw.storage)
        self.segments.degraded = check.degraded
        self._storage_full = check.full
        if check.full and self.segments.segment:
            try:
                self.segments.end()  # seal what was written before the disk filled
            except OSError as e:
                self._write_failed(e)

    def record(self, badges: list[str], room_id: str | None, paused: bool) -> None:
        """Capture one frame from every camera and the microphone, and keep it;
        :attr:`lost`: whether real time was lost before it."""
        began, self._waited = self.clock.monotonic(), 0.0
        self.lost = self._record(badges, room_id, paused)
        done, gov = self.clock.monotonic(), self.governor
        # the load is the work: waiting for the sensor or the sound card is no load
        work = done - began - self._waited
        change = gov.lost(done) if self.lost else gov.frame(work, done)
        if change:
            self.segments.load_bitrate = change.bitrate if change.level else None
            self.continuity.load_changed(change)

    def load(self) -> dict[str, float | int]:
        """The step the load is at (0: as configured), what it records at, how busy."""
        gov = self.governor
        return {
            "level": gov.level,
            "bitrate": gov.bitrate,
            "picture_rate": round(self.fps / gov.hold, 3),
            "busy": round(gov.busy, 3),
        }

    def _record(self, badges: list[str], room_id: str | None, paused: bool) -> bool:
        now = self.clock.monotonic()
        kept = self._footage_end()
        behind = time_lost(kept.mono, now, self.lost_seconds) if kept else 0.0
        # stepped down: a picture is kept for a few frames (never across lost time)
        fresh = behind or self._held is None or self._held_for >= self.governor.hold
        captured = now
        frames: dict[str, VideoFrame] = {}
        failed: dict[str, str] = {}
        if fresh:
            frames, failed = self._capture(now)
            captured = next(iter(frames.values())).captured  # stands for all tracks
            # what verify will measure: from the footage kept to this frame's capture
            behind = time_lost(kept.mono, captured, self.lost_seconds) if kept else 0.0
        samples = self._listen()
        gnss = self.hw.gnss.state()
        self.continuity.note_fix(gnss.has_fix)
        if self._storage_full or paused:
            self._held = None
            self.segments.skip()  # the timeline goes on; the gap is logged
            return False
        wall = self.clock.wall() - (self.clock.monotonic() - captured)
        if kept and behind:
            try:
                self._lose_time(kept, captured, wall)
            except OSError as e:
                self._write_failed(e)
                return True
            except av.FFmpegError as e:  # flushing the encoders failed
                self._encoder_failed(e)
                return True
        if fresh:
            text = self.capture.label(self.clock, gnss, captured, badges, room_id)
            self._held, self._held_for = self.capture.pictures_of(frames, failed, text), 1
        else:
            self._held_for += 1
        assert self._held is not None
        audio = self._silence if samples is None else samples
        try:
            self.segments.add(self._held, audio, samples is not None, gnss, captured, wall)
            self.continuity.clear("write_error")
            self.continuity.clear("encoder")
        except OSError as e:
            self._write_failed(e)
        except av.FFmpegError as e:
            self._encoder_failed(e)
        return bool(behind)

    def _capture(self, now: float) -> tuple[dict[str, VideoFrame], dict[str, str]]:
        """A frame from every camera; a failed one's tracks are interrupted."""
        start = self.clock.monotonic()
        frames, failed = self.capture.read(now)
        self._waited += self.clock.monotonic() - start
        for camera in frames:
            feeds = self.capture.feeds[camera]
            if camera in failed:
                self.continuity.fault("camera", ["video"], failed[camera], tracks=feeds)
            else:
                self.continuity.clear("camera", feeds)
        return frames, failed

    def _listen(self) -> np.ndarray | None:
        """A frame's samples from the microphone; None (silence kept) when it failed."""
        start = self.clock.monotonic()
        try:
            samples = self.hw.microphone.read(len(self._silence))
        except MicrophoneError as e:
            self.continuity.fault("microphone", ["audio"], str(e))
            return None
        finally:
            self._waited += self.clock.monotonic() - start
        self.continuity.clear("microphone")
        return samples

    def _footage_end(self) -> Moment | None:
        """Where the footage of the segment being written ends, at the recording's rate
        (as its manifest will say); None when none is being written."""
        seg = self.segments.segment
        if seg is None or not seg.frames:  # none yet: a session just opened from idle
            return None
        late = seg.frames / self.fps
        return Moment(seg.start.wall + late, seg.start.mono + late, self.clock.synced())

    def _lose_time(self, kept: Moment, captured: float, wall: float) -> None:
        """The loop could not keep real time: what was kept is sealed up to where it ends,
        then the gap (so it falls between them on the chain), and the footage goes on from
        this frame, on a media timeline that skips the time lost, as after any gap."""
        resumed = Moment(max(wall, kept.wall), max(captured, kept.mono), self.clock.synced())
        self.segments.end()
        lost = resumed.mono - kept.mono
        if self.continuity.time_lost(kept, resumed, f"{lost:.2f} s behind real time"):
            self.segments.skip(round(lost * self.fps))

    def _encoder_failed(self, e: av.FFmpegError) -> None:
        """The encoder failed: what it held is lost, a fresh one starts next frame."""
        lost = self.segments.abandon()
        self.continuity.fault("encoder", ["video", "audio"], str(e), since=lost)
        self.segments.skip()

    def _write_failed(self, e: OSError) -> None:
        cause = "storage_full" if e.errno == errno.ENOSPC else "write_error"
        lost = self.segments.abandon()
        self.continuity.fault(cause, ["video", "audio"], e.strerror or str(e), since=lost)
        self.segments.skip()

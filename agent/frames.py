"""One frame of recording: capture, watermark and encode, with every fault an
interruption rather than a stop.

A failed camera is replaced by black frames (the audio goes on), a failed microphone by
silence, a full disk pauses writing, a failed encoder starts afresh on the next frame;
each is an interruption of the open session (:mod:`agent.continuity`), ended when the
fault clears.

Example::

    frames = FrameRecorder(config, hardware, clock, capture, segments, continuity)
    frames.check_storage()                 # once a second
    frames.record(badges, room_id, paused=False)
"""

from __future__ import annotations

import errno

import av
import numpy as np

from agent.capture import Capture
from agent.continuity import Continuity
from agent.segments import Segmenter
from common.settings import DeviceConfig
from device.clock import Clock
from device.hardware import Hardware
from device.microphone import MicrophoneError


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
        self._silence = np.zeros(rec.audio_rate // rec.fps, np.int16)
        self._storage_full = False

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
        """Capture one frame from every camera and the microphone, and keep it."""
        now = self.clock.monotonic()
        frames, failed = self.capture.read(now)
        for camera in frames:
            feeds = self.capture.feeds[camera]
            if camera in failed:
                self.continuity.fault("camera", ["video"], failed[camera], tracks=feeds)
            else:
                self.continuity.clear("camera", feeds)
        frame = next(iter(frames.values()))  # its capture time stands for all tracks
        try:
            samples = self.hw.microphone.read(len(self._silence))
            self.continuity.clear("microphone")
        except MicrophoneError as e:
            self.continuity.fault("microphone", ["audio"], str(e))
            samples = None
        gnss = self.hw.gnss.state()
        self.continuity.note_fix(gnss.has_fix)
        if self._storage_full or paused:
            self.segments.skip()  # the timeline goes on; the gap is logged
            return
        wall = self.clock.wall() - (self.clock.monotonic() - frame.captured)
        text = self.capture.label(self.clock, gnss, frame.captured, badges, room_id)
        images = self.capture.pictures_of(frames, failed, text)
        audio = self._silence if samples is None else samples
        try:
            self.segments.add(images, audio, samples is not None, gnss, frame.captured, wall)
            self.continuity.clear("write_error")
            self.continuity.clear("encoder")
        except OSError as e:
            self._write_failed(e)
            return
        except av.FFmpegError as e:  # the encoder failed: a fresh one starts next frame
            lost = self.segments.abandon()
            self.continuity.fault("encoder", ["video", "audio"], str(e), since=lost)
            self.segments.skip()

    def _write_failed(self, e: OSError) -> None:
        cause = "storage_full" if e.errno == errno.ENOSPC else "write_error"
        lost = self.segments.abandon()
        self.continuity.fault(cause, ["video", "audio"], e.strerror or str(e), since=lost)
        self.segments.skip()

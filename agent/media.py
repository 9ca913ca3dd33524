"""Encoding segments and reading them back (PyAV).

A segment is one fragmented MP4 file: H.264 video with a keyframe every
``keyframe_seconds`` (each keyframe starts an MP4 fragment), AAC audio, and presentation
timestamps that continue from the previous segment. Because every fragment is complete
on disk before the next begins, a file cut short by a power loss still decodes up to its
last complete fragment: at most one keyframe interval of footage is lost.

Example::

    w = SegmentWriter(path, settings, first_frame=60)   # timestamps start at 2.0 s
    w.add(frame.image, samples)
    facts = w.close()                                    # flushed and fsynced
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from common.settings import Recording
from device.camera import Image
from device.microphone import Samples
from evidence.verify import MediaFacts

VIDEO_CODEC = "h264"
AUDIO_CODEC = "aac"

# frag_keyframe: a fragment per keyframe; empty_moov: playable while being written;
# frag_discont: keep our continuing timestamps instead of restarting each file at zero.
_MUX_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_discont",
    "avoid_negative_ts": "disabled",
    "flush_packets": "1",
}


@dataclass(frozen=True)
class WrittenSegment:
    path: Path
    first_frame: int
    frames: int
    audio_samples: int
    size: int
    sha256: str
    bitrate: int  # the H.264 target it was encoded at


class _HashingSink:
    """The file a segment is muxed into, hashed as it is written.

    It has no ``seek``, so the muxer writes strictly in order (as fragmented MP4 allows) and
    the running SHA-256 is the file's: sealing needs no second read of the segment.
    """

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115  (closed in close())
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._f.write(data) or 0

    def flush(self) -> None:
        pass

    def close_and_sync(self) -> None:
        os.fsync(self._f.fileno())
        self._f.close()


class SegmentWriter:
    """Encodes frames and audio into one fragmented MP4 file."""

    def __init__(self, path: Path, rec: Recording, first_frame: int) -> None:
        self.path = path
        self.first_frame = first_frame
        self.bitrate = rec.video_bitrate
        self.frames = 0
        self.audio_samples = 0
        self._rec = rec
        self._spf = rec.audio_rate // rec.fps  # audio samples per video frame
        self._sink = _HashingSink(path)
        self._out: Any = av.open(self._sink, "w", format="mp4", options=_MUX_OPTIONS)
        gop = rec.fps * rec.keyframe_seconds
        v = self._out.add_stream("libx264", rate=rec.fps)
        v.width, v.height, v.pix_fmt = rec.width, rec.height, "yuv420p"
        v.bit_rate = rec.video_bitrate
        v.gop_size = gop
        v.time_base = Fraction(1, rec.fps)
        v.codec_context.options = {
            "preset": rec.encoder_preset,
            "tune": "zerolatency",  # no B-frame lookahead: frames leave as they come
            "keyint_min": str(gop),
            "sc_threshold": "0",  # keyframes on the clock only, so fragments are regular
            "threads": str(rec.encoder_threads),
        }
        a = self._out.add_stream("aac", rate=rec.audio_rate)
        a.layout = "mono"
        self._v, self._a = v, a
        self._vtb = Fraction(1, rec.fps)
        self._atb = Fraction(1, rec.audio_rate)

    def add(self, image: Image, samples: Samples | None) -> None:
        """One video frame and the audio that covers it (None: microphone failed)."""
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf.pts = self.first_frame + self.frames
        vf.time_base = self._vtb  # not the stream's: the muxer rewrites that one
        self._out.mux(self._v.encode(vf))
        if samples is not None:
            af = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            af.sample_rate = self._rec.audio_rate
            af.pts = (self.first_frame + self.frames) * self._spf
            af.time_base = self._atb
            self._out.mux(self._a.encode(af))
            self.audio_samples += len(samples)
        self.frames += 1

    def close(self) -> WrittenSegment:
        """Flush encoders, close the file, fsync it, and hash it."""
        self._out.mux(self._v.encode(None))
        self._out.mux(self._a.encode(None))
        self._out.close()
        self._sink.close_and_sync()
        return WrittenSegment(
            self.path,
            self.first_frame,
            self.frames,
            self.audio_samples,
            self._sink.size,
            self._sink.sha.hexdigest(),
            self.bitrate,
        )

    def abandon(self) -> None:
        """Close without flushing (the encoder failed); what was written stays readable."""
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._out.close()
        self._sink.close_and_sync()


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def probe(path: Path) -> MediaFacts:
    """Hash and fully decode a segment with PyAV's demuxer and decoders."""
    size, digest = hash_file(path)
    frames, audio = 0, 0
    first: float | None = None
    last: float | None = None
    frame_dur = 0.0
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return MediaFacts(size, digest, decode_error="no video stream")
            vs = c.streams.video[0]
            frame_dur = 1 / float(vs.average_rate or vs.guessed_rate or 30)
            for frame in c.decode(video=0):
                if frame.pts is None or frame.time_base is None:
                    return MediaFacts(size, digest, frames, decode_error="frame without timestamp")
                t = float(frame.pts * frame.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
                frames += 1
        with av.open(str(path)) as c:
            if c.streams.audio:
                for af in c.decode(audio=0):
                    audio += af.samples
    except (av.FFmpegError, OSError, ValueError) as e:
        return MediaFacts(size, digest, frames, first, None, audio, decode_error=str(e))
    end = None if last is None else last + frame_dur
    return MediaFacts(size, digest, frames, first, end, audio)


def decode_frames(path: Path) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    """Every video frame of a segment as RGB arrays (for tests and previews)."""
    with av.open(str(path)) as c:
        return [np.asarray(f.to_ndarray(format="rgb24"), np.uint8) for f in c.decode(video=0)]

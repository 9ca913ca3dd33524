"""Encoding a recording into segment files (PyAV); reading them back is
:mod:`common.archive.media`'s.

One :class:`TrackEncoder` per track runs for the life of a recording (pre-event buffer
included): its H.264 and AAC encoders are never restarted between segments, so the audio
has no priming silence and no overlap at a cut. The packets it makes are muxed into one
:class:`SegmentFile` after another, cut at a video keyframe (picamera2's
``SplittableOutput`` is the model). Every segment is a standalone fragmented MP4 whose
timestamps start at its first video frame, and whose audio ends exactly where its video
does, so segments played back to back (``ffmpeg -f concat -c copy``) last exactly as long
as the recording (give or take the encoder's priming at its start and the padding of its
last AAC frame: 21 ms each, once per recording, not per segment). A keyframe starts each
MP4 fragment: a file cut short by a power loss still decodes up to its last complete
fragment.

Example::

    enc = TrackEncoder(settings, bitrate=2_000_000, codec="libx264")
    seg = SegmentFile(path, enc, first_frame=60)      # starts at the encoder's next frame
    video, audio = enc.encode(picture, samples, keyframe=True)   # picture: YUV 4:2:0
    for p in video: seg.mux_video(p)
    for p in audio: seg.mux_audio(p)
    facts = seg.close(audio_end=enc.samples)          # flushed, fsynced and hashed
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from nacl.public import PublicKey

from agent.fragments import FragmentCutter
from common.recording_settings import Recording
from device.camera import Image
from device.microphone import Samples
from evidence.encryption import (
    Encryptor,
    key_id,
)

_log = logging.getLogger(__name__)

VIDEO_CODEC = "h264"
AUDIO_CODEC = "aac"
SOFTWARE_H264 = "libx264"
HARDWARE_H264 = "h264_v4l2m2m"  # the V4L2 memory-to-memory encoder of a Pi 4 or Zero 2 W

# Device-tree "compatible" strings of SoCs with a V4L2 H.264 encoder (BCM2711: Pi 4, 400,
# CM4; BCM2837/2710: Pi 3, Zero 2 W). The Pi 5's BCM2712 has none.
_HARDWARE_H264_SOCS = (b"brcm,bcm2711", b"brcm,bcm2837", b"brcm,bcm2710")
DEVICE_TREE = Path("/proc/device-tree/compatible")

# frag_keyframe: a fragment per keyframe, so a file cut short by a power loss decodes up to
# its last complete fragment. delay_moov: the moov is written with the first fragment, when
# each track's first timestamp is known, so the audio's offset from the cut (part of an AAC
# frame) goes into an edit list instead of the fragments' decode times, which demuxers
# would count twice into the file's length; it also takes an encoder's in-band H.264
# headers (a hardware encoder's) for the moov. movie_timescale: the edit list in audio
# samples, not milliseconds, so segments played back to back keep the audio exact.
_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+delay_moov"


def mux_options(audio_rate: int) -> dict[str, str]:
    """The segment muxer's options."""
    return {
        "movflags": _MOVFLAGS,
        "movie_timescale": str(audio_rate),
        "avoid_negative_ts": "disabled",
        "flush_packets": "1",
    }


def automatic_encoder(compatible: bytes) -> str:
    """The H.264 encoder for a board, from its device tree's ``compatible`` list
    (NUL-separated): the hardware one where the SoC has it, else software.

    Example::

        automatic_encoder(b"raspberrypi,4-model-b\0brcm,bcm2711\0")   # "h264_v4l2m2m"
        automatic_encoder(b"")                                            # "libx264"
    """
    socs = set(compatible.split(b"\0"))
    return HARDWARE_H264 if socs & set(_HARDWARE_H264_SOCS) else SOFTWARE_H264


def configured_encoder(setting: str, device_tree: Path = DEVICE_TREE) -> str:
    """The encoder the ``recording.encoder`` setting names; ``auto`` asks the board."""
    if setting != "auto":
        return setting
    try:
        return automatic_encoder(device_tree.read_bytes())
    except OSError:  # no device tree: not a single-board computer
        return SOFTWARE_H264


class EncoderChoice:
    """Which H.264 encoder a device's tracks use, falling back to software for good when
    the hardware one cannot be opened (the reason kept for the chain and the log).

    Example::

        choice = EncoderChoice("h264_v4l2m2m")
        enc = choice.open(rec, bitrate)     # a TrackEncoder; libx264 if the hardware failed
        choice.take_fallback()              # ("h264_v4l2m2m", "Invalid argument ...") once
    """

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._fallback: tuple[str, str] | None = None

    def open(self, rec: Recording, bitrate: int) -> TrackEncoder:
        try:
            return TrackEncoder(rec, bitrate, self.codec)
        except (av.FFmpegError, ValueError) as e:
            if self.codec == SOFTWARE_H264:
                raise
            _log.warning(
                "H.264 encoder %s failed to open (%s): using %s", self.codec, e, SOFTWARE_H264
            )
            self._fallback = (self.codec, str(e))
            self.codec = SOFTWARE_H264
            return TrackEncoder(rec, bitrate, self.codec)

    def take_fallback(self) -> tuple[str, str] | None:
        """(the encoder that failed, why), once after a fallback; else None."""
        fallback, self._fallback = self._fallback, None
        return fallback


@dataclass(frozen=True)
class WrittenSegment:
    path: Path
    first_frame: int
    frames: int
    audio_samples: int
    size: int
    sha256: str  # of the bytes stored: the ciphertext when encrypted
    bitrate: int  # the H.264 target it was encoded at
    sealed: Sealed | None = None  # how it is encrypted (None: stored in the clear)


@dataclass(frozen=True)
class Sealed:
    """A segment encrypted to the agency: to which key, and the MP4 inside (unknown for a
    segment recovered after a power cut: the device cannot decrypt what it wrote)."""

    key_id: str
    plain_sha256: str | None = None
    plain_size: int | None = None


class SegmentSink:
    """The file a segment is muxed into, hashed as it is written; with the agency's
    evidence key, encrypted as it is written, one record per MP4 fragment.

    It has no ``seek``, so the muxer writes strictly in order (as fragmented MP4 allows)
    and the running SHA-256 is the stored file's: sealing needs no second read.
    """

    def __init__(self, path: Path, agency: PublicKey | None = None) -> None:
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115  (closed in close())
        self.sha = hashlib.sha256()
        self.size = 0
        self.plain_sha = hashlib.sha256()
        self.plain_size = 0
        self._agency = agency
        self._enc = Encryptor(agency) if agency else None
        self._cut = FragmentCutter()
        if self._enc:
            self._store(self._enc.header)

    def write(self, data: bytes) -> int:
        self.plain_sha.update(data)
        self.plain_size += len(data)
        if self._enc is None:
            self._store(data)
        else:
            for message, video, audio in self._cut.feed(data):
                self._store(self._enc.record(message, video, audio))
        return len(data)

    def flush(self) -> None:
        pass

    def sealed(self) -> Sealed | None:
        if self._agency is None:
            return None
        return Sealed(key_id(self._agency), self.plain_sha.hexdigest(), self.plain_size)

    def close_and_sync(self) -> None:
        if self._enc is not None:
            cut = self._cut
            self._store(self._enc.record(cut.rest(), cut.video, cut.audio, final=True))
            self._enc = None
        os.fsync(self._f.fileno())
        self._f.close()

    def _store(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        self._f.write(data)


class TrackEncoder:
    """The video and audio encoders of one track, open for the life of a recording.

    They belong to an MP4 container on a memory buffer that nothing is muxed into: opened
    for MP4, the encoders put their headers in extradata, which every segment file copies.
    Video timestamps count the frames encoded, audio ones the samples.
    """

    def __init__(self, rec: Recording, bitrate: int, codec: str = SOFTWARE_H264) -> None:
        self.bitrate = bitrate
        self.codec = codec
        self.rate = rec.audio_rate
        self.frames = 0  # frames encoded so far: the next frame's pts
        self.samples = 0  # audio samples encoded so far
        self._master: Any = av.open(io.BytesIO(), "w", format="mp4")
        gop = rec.fps * rec.keyframe_seconds
        v: Any = self._master.add_stream(codec, rate=rec.fps)
        v.width, v.height, v.pix_fmt = rec.width, rec.height, "yuv420p"
        v.bit_rate = bitrate
        v.gop_size = gop
        v.time_base = Fraction(1, rec.fps)
        if codec == SOFTWARE_H264:
            v.codec_context.options = {
                "preset": rec.encoder_preset,
                "tune": "zerolatency",  # no B-frame lookahead: frames leave as they come
                "keyint_min": str(gop),
                "sc_threshold": "0",  # keyframes on the clock only, so fragments are regular
                "threads": str(rec.encoder_threads),
            }
        # The V4L2 encoder takes bitrate and GOP from the codec context, and a keyframe
        # where a frame is marked I (its FORCE_KEY_FRAME control): nothing else to set.
        a = self._master.add_stream("aac", rate=rec.audio_rate)
        a.layout = "mono"
        try:
            self._master.start_encoding()  # opens both encoders, once
        except BaseException:
            self.close()
            raise
        self.video, self.audio = v, a
        self._vtb = Fraction(1, rec.fps)
        self._atb = Fraction(1, rec.audio_rate)

    def encode(
        self, image: Image, samples: Samples, keyframe: bool = False
    ) -> tuple[list[av.Packet], list[av.Packet]]:
        """One frame and the audio that covers it; the packets the encoders gave back.
        ``keyframe``: force one here (a segment starts with this frame)."""
        vf = av.VideoFrame.from_ndarray(image, format="yuv420p")  # no colour conversion
        vf.pts, vf.time_base = self.frames, self._vtb
        if keyframe:
            vf.pict_type = av.video.frame.PictureType.I
        video = self.video.encode(vf)
        for p in video:
            p.duration = 1  # one frame: the muxer needs it for the last frame of a file
        af = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        af.sample_rate, af.pts, af.time_base = self.rate, self.samples, self._atb
        audio = self.audio.encode(af)
        self.frames += 1
        self.samples += len(samples)
        return video, audio

    def flush(self) -> tuple[list[av.Packet], list[av.Packet]]:
        """What the encoders still hold; they cannot be used afterwards."""
        video = self.video.encode(None)
        for p in video:
            p.duration = 1
        return video, self.audio.encode(None)

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._master.close()


class SegmentFile:
    """One standalone fragmented MP4 file of a track, starting at the encoder's next frame.

    Timestamps are made relative to that frame. The last audio packet is held back until
    :meth:`close` knows where the segment ends, so that its duration stops at the cut.
    """

    def __init__(
        self,
        path: Path,
        encoder: TrackEncoder,
        first_frame: int,
        agency: PublicKey | None = None,
    ) -> None:
        self.path = path
        self.first_frame = first_frame  # on the recorder's timeline (the manifest's)
        self.bitrate = encoder.bitrate
        self.video_origin = encoder.frames
        self.audio_origin = encoder.samples
        self.frames = 0
        self._sink = SegmentSink(path, agency)
        self._out: Any = av.open(self._sink, "w", format="mp4", options=mux_options(encoder.rate))
        self._v = self._out.add_stream_from_template(encoder.video)
        self._a = self._out.add_stream_from_template(encoder.audio)
        self._held: av.Packet | None = None

    def mux_video(self, p: av.Packet) -> None:
        _rebase(p, self.video_origin)
        p.stream = self._v
        self._out.mux(p)
        self.frames += 1

    def mux_audio(self, p: av.Packet) -> None:
        _rebase(p, self.audio_origin)
        p.stream = self._a
        if self._held is not None:
            self._out.mux(self._held)
        self._held = p

    def close(self, audio_end: int) -> WrittenSegment:
        """Close, fsync and hash the file; ``audio_end``: the encoder's sample where the
        next segment starts (or the recording ends)."""
        end = audio_end - self.audio_origin
        if self._held is not None:
            held, self._held = self._held, None
            # The last AAC frame runs past the cut (the next file's audio starts where it
            # ends); its duration in this file stops at the cut, so that the file lasts
            # exactly as long as its video and files played back to back add up.
            if held.pts is not None:
                held.duration = max(1, min(held.duration or 1024, end - held.pts))
            self._out.mux(held)
        self._out.close()
        self._sink.close_and_sync()
        return WrittenSegment(
            self.path,
            self.first_frame,
            self.frames,
            max(0, end),
            self._sink.size,
            self._sink.sha.hexdigest(),
            self.bitrate,
            self._sink.sealed(),
        )

    def abandon(self) -> None:
        """Close without the held audio (the encoder failed); what was written stays readable."""
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._out.close()
        self._sink.close_and_sync()


def _rebase(p: av.Packet, origin: int) -> None:
    if p.pts is not None:
        p.pts -= origin
    if p.dts is not None:
        p.dts -= origin

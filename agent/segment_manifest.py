"""What a sealed segment's manifest says: its file, media, timing, place and encryption.

The one place the device builds a :class:`evidence.manifest.SegmentManifest` from a written
file (:class:`agent.media.WrittenSegment`) and the recording settings; moving the file and
sealing the manifest stay with :meth:`agent.segments.Segmenter.seal`.

Example::

    segment_manifest(written, 0, "sessions/S/0000-main.mp4", start, end, location,
                     audio_ok=True, rec=config.recording, before_open=0.0,
                     badges=["4711"], track="main", recovered=False)
"""

from __future__ import annotations

from agent.media import AUDIO_CODEC, VIDEO_CODEC, Sealed, WrittenSegment
from common.settings import Recording
from evidence.encryption import SCHEME
from evidence.manifest import IN_THE_CLEAR, Audio, Encryption, Location, SegmentManifest, Video
from evidence.seal import Moment


def segment_manifest(
    w: WrittenSegment,
    index: int,
    file: str,
    start: Moment,
    end: Moment,
    location: Location,
    audio_ok: bool,
    rec: Recording,
    before_open: float,
    badges: list[str],
    track: str,
    recovered: bool,
) -> SegmentManifest:
    """The manifest of segment ``index`` of a session, written to ``file`` (relative to the
    evidence directory); ``badges``: those burned into its picture."""
    return SegmentManifest(
        index=index,
        file=file,
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
            timestamps="segment",
        ),
        audio=Audio(AUDIO_CODEC, rec.audio_rate, 1, w.audio_samples)
        if audio_ok and w.audio_samples
        else None,
        prebuffer_seconds=round(before_open, 6),
        location=location,
        badges=badges,
        track=track,
        recovered=recovered,
        encryption=encryption(w.sealed),
    )


def encryption(sealed: Sealed | None) -> Encryption:
    if sealed is None:
        return IN_THE_CLEAR
    return Encryption(SCHEME, sealed.key_id, sealed.plain_sha256, sealed.plain_size)

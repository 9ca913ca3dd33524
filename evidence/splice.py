"""Where each segment's packets go when a track's segments become one file: pure.

An export copies every packet of every segment, unchanged and in order, into one MP4 per
track; only timestamps are set. Video goes back to back: a segment's first frame follows
the previous segment's last. Audio keeps its place against the picture, so that within
one run of the encoder (a recording) its packets land exactly where the encoder put them
and the sound is continuous. Where a new recording starts (after a power cut, a pause, a
full disk: the file begins with the AAC encoder's priming packet, before its first frame),
its sound would overlap the end of the previous one. If the evidence has a hole there, the
export leaves a hole of whole frames instead; if it has none (the encoder restarted at a
lower bitrate), the sound is moved later by the overlap and the summary says by how much.

Example::

    splicer = Splicer(fps=15, rate=48000)
    first = splicer.place(SegmentPackets(frames=30, audio_first=-1024, audio_last=95232))
    first.video, first.audio          # (0, 0): the session starts the export
    nxt = splicer.place(SegmentPackets(30, 256, 95488))
    nxt.video, nxt.audio              # (30, 96000): frame 30, sound where the encoder put it
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evidence.manifest import SegmentManifest

AAC_FRAME = 1024  # samples one AAC packet decodes to


@dataclass(frozen=True)
class SegmentPackets:
    """What a segment file holds, read without decoding. Times are on the file's own
    timeline, whose zero is its first video frame: ``audio_first``/``audio_last`` are the
    first and last audio packets' timestamps in samples (None: no audio packets)."""

    frames: int
    audio_first: int | None = None
    audio_last: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where one segment goes: its first frame's number in the export (``video``), the
    samples added to its audio timestamps (``audio``), the frames of hole left before it
    (only where the evidence has a gap), the samples its sound is late against the
    picture (after an encoder restart with no gap), and the samples of silence before it
    that no packet covers."""

    video: int
    audio: int
    frames: int
    hole_frames: int = 0
    audio_lag: int = 0
    audio_hole: int = 0


def gap_between(prev: SegmentManifest | None, cur: SegmentManifest) -> bool:
    """Whether the evidence has a hole between two consecutive segments of a track: the
    device's media timeline jumps (a pause, a full disk, a reboot), or the earlier one was
    cut short by a power loss. ``prev`` None: a segment before it is not exported."""
    if prev is None:
        return True
    return prev.recovered or cur.video.first_frame != prev.video.first_frame + prev.video.frames


class Splicer:
    """Places one track's segments, in order, on the export's timeline."""

    def __init__(self, fps: int, rate: int, aac_frame: int = AAC_FRAME) -> None:
        if rate % fps:
            raise ValueError("audio rate must be a multiple of fps (whole samples per frame)")
        self.fps, self.rate, self.aac_frame = fps, rate, aac_frame
        self.per_frame = rate // fps
        self.next_frame = 0  # where the next segment's first frame goes
        self.audio_free: int | None = None  # the first sample no placed packet covers
        self.lag = 0  # samples the sound is late against the picture, until the next gap

    def place(self, seg: SegmentPackets, gap_before: bool = False) -> Placement:
        video = self.next_frame
        lag = 0 if gap_before else self.lag
        audio = video * self.per_frame + lag
        hole = silence = 0
        if seg.audio_first is not None and self.audio_free is not None:
            short = self.audio_free - (audio + seg.audio_first)
            if short > 0 and gap_before:
                hole = math.ceil(short / self.per_frame)
                video += hole
                audio += hole * self.per_frame
            elif short > 0:
                lag += short
                audio += short
            elif short < 0 and not gap_before:
                silence = -short
        self.next_frame = video + seg.frames
        self.lag = lag
        if seg.audio_last is not None:
            self.audio_free = audio + seg.audio_last + self.aac_frame
        return Placement(video, audio, seg.frames, hole, lag, silence)

    @property
    def duration(self) -> float:
        """Seconds of picture placed so far."""
        return self.next_frame / self.fps

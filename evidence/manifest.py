"""The segment manifest, as a type: built and parsed here and nowhere else.

A segment's manifest is the ``body`` of its chain entry (:mod:`evidence.seal`): which
file, its bytes, its time, its media, where it was recorded and how it is stored. It turns
into exactly the dict that is sealed (:meth:`SegmentManifest.to_body`) and back
(:meth:`SegmentManifest.from_body`, which raises :class:`ManifestError` naming the field
that is wrong). The other bodies a session seals are :mod:`evidence.session_bodies`';
the rest :mod:`evidence.entries`'.

Example::

    m = SegmentManifest.from_body(entry.body)     # ManifestError if malformed
    m.track, m.index, m.sha256, m.end.wall
    sealer.seal("segment", m.to_body(), at, session)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evidence.body_fields import Fields, ManifestError
from evidence.seal import Entry, Moment

MAIN_TRACK = "main"  # a body recorder's one track (segments sealed before tracks name none)
CONTAINER = "mp4/fragmented"


@dataclass(frozen=True)
class Video:
    codec: str
    width: int
    height: int
    fps: int
    keyframe_seconds: float
    bitrate: int
    frames: int
    first_frame: int
    # "segment": each file's timestamps start at its first frame (the recorder's timeline
    # is first_frame); "session": they continue from the previous segment (older devices).
    timestamps: str = "session"


@dataclass(frozen=True)
class Audio:
    codec: str
    rate: int
    channels: int
    samples: int

    def to_body(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "rate": self.rate,
            "channels": self.channels,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Encryption:
    """How a segment's file is stored: ``scheme`` (:data:`evidence.encryption.SCHEME`, or
    "none": a test bench turned encryption off), the agency key it is encrypted to, and
    the MP4 inside (``plain_*``: absent for a segment recovered after a power cut)."""

    scheme: str
    key: str | None = None
    plain_sha256: str | None = None
    plain_size: int | None = None

    @property
    def encrypted(self) -> bool:
        return self.scheme != "none"

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"scheme": self.scheme}
        if self.key is not None:
            body["key"] = self.key
        if self.plain_sha256 is not None:
            body |= {"plain_sha256": self.plain_sha256, "plain_size": self.plain_size}
        return body

    @staticmethod
    def from_body(body: object, what: str) -> Encryption:
        f = Fields(body, what)
        return Encryption(
            f.get("scheme", str),
            f.get("key", str, optional=True),
            f.get("plain_sha256", str, optional=True),
            f.get("plain_size", int, optional=True),
        )


IN_THE_CLEAR = Encryption("none")


@dataclass(frozen=True)
class Location:
    """Where the segment was recorded: fix quality (ok, partial, none, unknown), first and
    last fix, and the oldest a fix got while it was lost."""

    fix: str
    start: tuple[float, float] | None = None
    end: tuple[float, float] | None = None
    max_fix_age: float | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "fix": self.fix,
            "start": list(self.start) if self.start else None,
            "end": list(self.end) if self.end else None,
            "max_fix_age": self.max_fix_age,
        }

    @staticmethod
    def from_body(body: object, what: str = "location") -> Location:
        f = Fields(body, what)
        return Location(
            f.get("fix", str),
            _point(f, "start"),
            _point(f, "end"),
            f.get("max_fix_age", float, optional=True),
        )


UNKNOWN_LOCATION = Location("unknown")


def _point(f: Fields, key: str) -> tuple[float, float] | None:
    raw = f.get(key, list, optional=True)
    if raw is None:
        return None
    if len(raw) != 2 or not all(isinstance(v, int | float) for v in raw):
        raise ManifestError(f"{f.what}: {key!r} is not [lat, lon]")
    return (raw[0], raw[1])


@dataclass(frozen=True)
class SegmentManifest:
    """A sealed media segment: which file, its bytes, its time, its media and place.

    ``track`` None: sealed before tracks were named (the main track); ``recovered``: cut
    by a power loss and sealed at the next boot."""

    index: int
    file: str
    sha256: str
    size: int
    start: Moment
    end: Moment
    video: Video
    audio: Audio | None
    prebuffer_seconds: float
    location: Location
    badges: list[str]
    track: str | None = MAIN_TRACK
    recovered: bool = False
    # None: sealed before devices encrypted (stored in the clear, unsaid)
    encryption: Encryption | None = None

    KIND = "segment"

    @property
    def track_name(self) -> str:
        return self.track or MAIN_TRACK

    @property
    def duration(self) -> float:
        return self.end.mono - self.start.mono

    @property
    def prebuffer(self) -> bool:
        return self.prebuffer_seconds > 0

    def to_body(self) -> dict[str, Any]:
        v, a = self.video, self.audio
        body: dict[str, Any] = {} if self.track is None else {"track": self.track}
        body |= {
            "index": self.index,
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            "start": self.start.as_dict(),
            "end": self.end.as_dict(),
            "media": {
                "container": CONTAINER,
                "video": {
                    "codec": v.codec,
                    "width": v.width,
                    "height": v.height,
                    "fps": v.fps,
                    "keyframe_seconds": v.keyframe_seconds,
                    "bitrate": v.bitrate,
                    "frames": v.frames,
                    "first_frame": v.first_frame,
                    **({"timestamps": v.timestamps} if v.timestamps != "session" else {}),
                },
                "audio": None if a is None else a.to_body(),
            },
            "prebuffer": self.prebuffer,
            "prebuffer_seconds": self.prebuffer_seconds,
            "location": self.location.to_body(),
            "badges": list(self.badges),
        }
        if self.recovered:
            body["recovered"] = True
        if self.encryption is not None:
            body["encryption"] = self.encryption.to_body()
        return body

    @staticmethod
    def from_body(body: object) -> SegmentManifest:
        f = Fields(body, "segment manifest")
        media = Fields(f.get("media", dict), "segment manifest.media")
        v = Fields(media.get("video", dict), "segment manifest.media.video")
        raw_audio = media.get("audio", dict, optional=True)
        audio = None
        if raw_audio is not None:
            a = Fields(raw_audio, "segment manifest.media.audio")
            audio = Audio(
                a.get("codec", str),
                a.get("rate", int),
                a.get("channels", int),
                a.get("samples", int),
            )
        start, end = f.moment("start"), f.moment("end")
        assert start and end
        return SegmentManifest(
            index=f.get("index", int),
            file=f.get("file", str),
            sha256=f.get("sha256", str),
            size=f.get("size", int),
            start=start,
            end=end,
            video=Video(
                v.get("codec", str),
                v.get("width", int),
                v.get("height", int),
                v.get("fps", (int, float)),
                v.get("keyframe_seconds", float),
                v.get("bitrate", int),
                v.get("frames", int),
                v.get("first_frame", int),
                v.get("timestamps", str, optional=True) or "session",
            ),
            audio=audio,
            prebuffer_seconds=f.get("prebuffer_seconds", float),
            location=Location.from_body(f.get("location", dict), "segment manifest.location"),
            badges=f.strings("badges") or [],
            track=f.get("track", str, optional=True),
            recovered=bool(f.get("recovered", bool, optional=True)),
            encryption=None
            if (raw := f.get("encryption", dict, optional=True)) is None
            else Encryption.from_body(raw, "segment manifest.encryption"),
        )


def segment(entry: Entry) -> SegmentManifest:
    """The manifest of a ``segment`` entry (ManifestError if it is another kind)."""
    if entry.kind != SegmentManifest.KIND:
        raise ManifestError(f"entry {entry.seq} is a {entry.kind}, not a segment")
    try:
        return SegmentManifest.from_body(entry.body)
    except ManifestError as e:
        raise ManifestError(f"entry {entry.seq}: {e}") from None

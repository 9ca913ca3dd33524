"""The bodies the recorder seals, as types: built and parsed here and nowhere else.

A body is the ``body`` object of a chain entry (:mod:`evidence.seal`). Each type turns
into exactly the dict that is sealed (:meth:`to_body`) and back (:meth:`from_body`, which
raises :class:`ManifestError` naming the entry kind and the field that is wrong). The
evidence format is these bodies: changing it means changing this module.

Example::

    m = SegmentManifest.from_body(entry.body)     # ManifestError if malformed
    m.track, m.index, m.sha256, m.end.wall
    sealer.seal("segment", m.to_body(), at, session)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from evidence.seal import Entry, Moment, SealError

MAIN_TRACK = "main"  # a body recorder's one track (segments sealed before tracks name none)
CONTAINER = "mp4/fragmented"

T = TypeVar("T")


class ManifestError(SealError):
    """A sealed body is not what its kind says (a field missing or of the wrong type)."""


# -- reading fields: one place that names what is wrong ---------------------------------


class _Fields:
    def __init__(self, body: object, what: str) -> None:
        if not isinstance(body, Mapping):
            raise ManifestError(f"{what}: not an object")
        self.body, self.what = body, what

    def get(self, key: str, kind: type[T] | tuple[type, ...], optional: bool = False) -> Any:
        if key not in self.body or (optional and self.body[key] is None):
            if optional:
                return None
            raise ManifestError(f"{self.what}: {key!r} is missing")
        value = self.body[key]
        numeric = kind in (float, (int, float))
        wrong = (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)
        if wrong and not (numeric and isinstance(value, int) and not isinstance(value, bool)):
            raise ManifestError(f"{self.what}: {key!r} is not {_name(kind)}")
        return value

    def moment(self, key: str, optional: bool = False) -> Moment | None:
        raw = self.get(key, dict, optional)
        if raw is None:
            return None
        f = _Fields(raw, f"{self.what}.{key}")
        return Moment(f.get("wall", float), f.get("mono", float), f.get("synced", bool))

    def strings(self, key: str, optional: bool = False) -> list[str] | None:
        raw = self.get(key, list, optional)
        if raw is None:
            return None
        if not all(isinstance(v, str) for v in raw):
            raise ManifestError(f"{self.what}: {key!r} is not a list of strings")
        return list(raw)


Fields = _Fields  # the other entry kinds' bodies (evidence.entries) read the same way


def _name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names.update({dict: "an object", list: "a list"})
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def _moment(m: Moment) -> dict[str, Any]:
    return m.as_dict()


# -- segment ----------------------------------------------------------------------------


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
        f = _Fields(body, what)
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
        f = _Fields(body, what)
        return Location(
            f.get("fix", str),
            _point(f, "start"),
            _point(f, "end"),
            f.get("max_fix_age", float, optional=True),
        )


UNKNOWN_LOCATION = Location("unknown")


def _point(f: _Fields, key: str) -> tuple[float, float] | None:
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
            "start": _moment(self.start),
            "end": _moment(self.end),
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
        f = _Fields(body, "segment manifest")
        media = _Fields(f.get("media", dict), "segment manifest.media")
        v = _Fields(media.get("video", dict), "segment manifest.media.video")
        raw_audio = media.get("audio", dict, optional=True)
        audio = None
        if raw_audio is not None:
            a = _Fields(raw_audio, "segment manifest.media.audio")
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


# -- sessions -------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseCommand:
    """The case system's command that opened or closed a room session."""

    case: str | None
    person: str | None
    nonce: str
    issued: float
    agency: str

    def to_body(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "person": self.person,
            "command": {"nonce": self.nonce, "issued": self.issued, "agency": self.agency},
        }

    @staticmethod
    def from_body(f: _Fields) -> CaseCommand | None:
        if "command" not in f.body:
            return None
        c = _Fields(f.get("command", dict), f"{f.what}.command")
        return CaseCommand(
            f.get("case", str, optional=True),
            f.get("person", str, optional=True),
            c.get("nonce", str),
            c.get("issued", float),
            c.get("agency", str),
        )


@dataclass(frozen=True)
class SessionOpen:
    """A session opens: its category, officers and tracks; in a room, which room and what
    opened it (``trigger``), and the case command if the case system did."""

    category: str
    badges: list[str]
    prebuffer_seconds: float
    tracks: list[str]
    in_room: bool = False
    room: str | None = None
    trigger: str | None = None
    case: CaseCommand | None = None

    KIND = "session_open"

    @property
    def first_track(self) -> str:
        return self.tracks[0] if self.tracks else MAIN_TRACK

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "category": self.category,
            "badges": list(self.badges),
            "prebuffer_seconds": self.prebuffer_seconds,
            "tracks": list(self.tracks),
        }
        if self.in_room:
            body["room"] = self.room
        if self.case:
            body |= self.case.to_body()
        if self.trigger is not None:
            body["trigger"] = self.trigger
        return body

    @staticmethod
    def from_body(body: object) -> SessionOpen:
        f = _Fields(body, "session_open")
        return SessionOpen(
            category=f.get("category", str),
            badges=f.strings("badges", optional=True) or [],
            prebuffer_seconds=f.get("prebuffer_seconds", float, optional=True) or 0,
            tracks=f.strings("tracks", optional=True) or [],
            in_room="room" in f.body,
            room=f.get("room", str, optional=True),
            trigger=f.get("trigger", str, optional=True),
            case=CaseCommand.from_body(f),
        )


@dataclass(frozen=True)
class SessionClose:
    """A session closes: how many segments, per track; in a room, what closed it."""

    segments: int
    tracks: dict[str, int]
    trigger: str | None = None
    case: CaseCommand | None = None

    KIND = "session_close"

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"segments": self.segments, "tracks": dict(self.tracks)}
        if self.case:
            body |= self.case.to_body()
        if self.trigger is not None:
            body["trigger"] = self.trigger
        return body

    @staticmethod
    def from_body(body: object) -> SessionClose:
        f = _Fields(body, "session_close")
        tracks = f.get("tracks", dict, optional=True) or {}
        if not all(isinstance(n, int) for n in tracks.values()):
            raise ManifestError("session_close: 'tracks' is not a count per track")
        return SessionClose(
            f.get("segments", int),
            dict(tracks),
            f.get("trigger", str, optional=True),
            CaseCommand.from_body(f),
        )


# -- interruptions and their explanations -----------------------------------------------


@dataclass(frozen=True)
class Interruption:
    """A gap in recording inside a session. ``end`` None: still open when sealed (an
    ``interruption_end`` follows); ``tracks`` empty: every track."""

    id: str
    cause: str
    affects: list[str]
    start: Moment
    end: Moment | None = None
    detail: str = ""
    tracks: tuple[str, ...] = ()

    KIND = "interruption"

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "cause": self.cause,
            "affects": list(self.affects),
            "start": _moment(self.start),
            "end": _moment(self.end) if self.end else None,
            "detail": self.detail,
        }
        if self.tracks:
            body["tracks"] = list(self.tracks)
        return body

    @staticmethod
    def from_body(body: object) -> Interruption:
        f = _Fields(body, "interruption")
        return Interruption(
            f.get("id", str),
            f.get("cause", str),
            f.strings("affects", optional=True) or [],
            f.moment("start"),  # type: ignore[arg-type]  # not optional: never None
            f.moment("end", optional=True),
            f.get("detail", str, optional=True) or "",
            tuple(f.strings("tracks", optional=True) or ()),
        )


@dataclass(frozen=True)
class InterruptionEnd:
    """The gap ``id`` closed: recording resumed at ``end``."""

    id: str
    end: Moment

    KIND = "interruption_end"

    def to_body(self) -> dict[str, Any]:
        return {"id": self.id, "end": _moment(self.end)}

    @staticmethod
    def from_body(body: object) -> InterruptionEnd:
        f = _Fields(body, "interruption_end")
        return InterruptionEnd(f.get("id", str), f.moment("end"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class VoiceExplanation:
    """The officer's spoken explanation of gap ``interruption``: the clip from start to end
    of the footage that follows it. (A written statement is :mod:`common.statements`'.)"""

    interruption: str
    start: Moment
    end: Moment

    KIND = "explanation"

    def to_body(self) -> dict[str, Any]:
        clip = {"start": _moment(self.start), "end": _moment(self.end)}
        return {"interruption": self.interruption, "kind": "voice", "clip": clip}

    @staticmethod
    def from_body(body: object) -> VoiceExplanation:
        f = _Fields(body, "explanation")
        if f.get("kind", str) != "voice":
            raise ManifestError("explanation: not a voice explanation")
        clip = _Fields(f.get("clip", dict), "explanation.clip")
        start, end = clip.moment("start"), clip.moment("end")
        assert start and end
        return VoiceExplanation(f.get("interruption", str), start, end)


@dataclass(frozen=True)
class Marker:
    """A typed act on the timeline (R2) and where it happened."""

    type: str
    note: str
    location: dict[str, Any]

    KIND = "marker"

    def to_body(self) -> dict[str, Any]:
        return {"type": self.type, "note": self.note, "location": dict(self.location)}

    @staticmethod
    def from_body(body: object) -> Marker:
        f = _Fields(body, "marker")
        return Marker(
            f.get("type", str),
            f.get("note", str, optional=True) or "",
            f.get("location", dict, optional=True) or {},
        )


Body = (
    SegmentManifest
    | SessionOpen
    | SessionClose
    | Interruption
    | InterruptionEnd
    | VoiceExplanation
    | Marker
)


def segment(entry: Entry) -> SegmentManifest:
    """The manifest of a ``segment`` entry (ManifestError if it is another kind)."""
    if entry.kind != SegmentManifest.KIND:
        raise ManifestError(f"entry {entry.seq} is a {entry.kind}, not a segment")
    try:
        return SegmentManifest.from_body(entry.body)
    except ManifestError as e:
        raise ManifestError(f"entry {entry.seq}: {e}") from None

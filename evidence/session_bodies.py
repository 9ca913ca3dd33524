"""What a session seals besides its segments, as types: built and parsed here only.

A session opens (:class:`SessionOpen`) and closes (:class:`SessionClose`), in a room on
the case system's command (:class:`CaseCommand`); its recording may be interrupted
(:class:`Interruption`, :class:`InterruptionEnd`) and the gap explained aloud
(:class:`VoiceExplanation`); the officer marks acts on its timeline (:class:`Marker`).
Each type turns into exactly the dict that is sealed (:meth:`to_body`) and back
(:meth:`from_body`, which raises :class:`ManifestError` naming the entry kind and the
field that is wrong). The segment manifest is :mod:`evidence.manifest`'s.

Example::

    opened = SessionOpen.from_body(entry.body)     # ManifestError if malformed
    chain.seal_body(InterruptionEnd(gap_id, chain.now()), session_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evidence.body_fields import Fields, ManifestError
from evidence.manifest import MAIN_TRACK
from evidence.seal import Moment

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
    def from_body(f: Fields) -> CaseCommand | None:
        if "command" not in f.body:
            return None
        c = Fields(f.get("command", dict), f"{f.what}.command")
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
        f = Fields(body, "session_open")
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
        f = Fields(body, "session_close")
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
            "start": self.start.as_dict(),
            "end": self.end.as_dict() if self.end else None,
            "detail": self.detail,
        }
        if self.tracks:
            body["tracks"] = list(self.tracks)
        return body

    @staticmethod
    def from_body(body: object) -> Interruption:
        f = Fields(body, "interruption")
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
        return {"id": self.id, "end": self.end.as_dict()}

    @staticmethod
    def from_body(body: object) -> InterruptionEnd:
        f = Fields(body, "interruption_end")
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
        clip = {"start": self.start.as_dict(), "end": self.end.as_dict()}
        return {"interruption": self.interruption, "kind": "voice", "clip": clip}

    @staticmethod
    def from_body(body: object) -> VoiceExplanation:
        f = Fields(body, "explanation")
        if f.get("kind", str) != "voice":
            raise ManifestError("explanation: not a voice explanation")
        clip = Fields(f.get("clip", dict), "explanation.clip")
        start, end = clip.moment("start"), clip.moment("end")
        assert start and end
        return VoiceExplanation(f.get("interruption", str), start, end)


@dataclass(frozen=True)
class Marker:
    """A typed act on the timeline (R2) and where it happened. A device seals a note of at
    most :attr:`NOTE_CHARS` (:meth:`new`); a longer one sealed before is read as it is."""

    type: str
    note: str
    location: dict[str, Any]

    KIND = "marker"
    NOTE_CHARS = 200  # what the officer may say of the act: a line, not a statement

    @staticmethod
    def new(type: str, note: str, location: dict[str, Any]) -> Marker:
        """A marker to seal; ValueError for a note longer than :attr:`NOTE_CHARS`."""
        if len(note) > Marker.NOTE_CHARS:
            raise ValueError(
                f"a marker's note is {len(note)} characters, more than {Marker.NOTE_CHARS}"
            )
        return Marker(type, note, location)

    def to_body(self) -> dict[str, Any]:
        return {"type": self.type, "note": self.note, "location": dict(self.location)}

    @staticmethod
    def from_body(body: object) -> Marker:
        f = Fields(body, "marker")
        return Marker(
            f.get("type", str),
            f.get("note", str, optional=True) or "",
            f.get("location", dict, optional=True) or {},
        )

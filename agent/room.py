"""An interview room's triggers and its picture-in-picture: decisions only, no I/O.

A room records as soon as a session opens there, with no one pressing record (R3). What
opens it is configured: the case system's signed command, the room panel's key switch, or
the door closing confirmed by the key within ``confirm_seconds``. A session the case
system opened is closed by the case system (a key turned to stop is refused, so a session
on the record cannot be ended from the corridor); one opened at the panel closes at the
panel. The panel shows what :func:`panel_state` says; its RECORDING lamp is lit exactly
while the state is ``recording``.

Example::

    t = RoomTriggers(["key", "door"], confirm_seconds=60)
    t.door(closed=True, now=0.0)        # -> [Prompt()]           panel blinks: confirm?
    t.key(start=True, now=5.0)          # -> [OpenRoomSession("door")]
    t.opened("door")                    # the recorder opened it
    t.key(start=False, now=900.0)       # -> [CloseRoomSession("key")]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from device import yuv
from device.camera import Image

Trigger = Literal["command", "key", "door", "api"]  # api: on the controller itself
PanelState = Literal["idle", "recording", "confirm", "fault"]


@dataclass(frozen=True)
class OpenRoomSession:
    trigger: Trigger


@dataclass(frozen=True)
class CloseRoomSession:
    trigger: Trigger


@dataclass(frozen=True)
class Refused:
    why: str


@dataclass(frozen=True)
class Prompt:
    """Ask the panel for the key's confirmation (door closed)."""


RoomAction = OpenRoomSession | CloseRoomSession | Refused | Prompt


class RoomTriggers:
    def __init__(self, triggers: Sequence[Trigger], confirm_seconds: float) -> None:
        self.triggers = set(triggers)
        self.confirm_seconds = confirm_seconds
        self.door_closed: bool | None = None  # None: the panel has not said yet
        self.awaiting_since: float | None = None  # door closed, key not yet turned
        self.opened_by: Trigger | None = None  # the open session's trigger

    @property
    def awaiting(self) -> bool:
        return self.awaiting_since is not None

    def opened(self, trigger: Trigger) -> None:
        self.opened_by, self.awaiting_since = trigger, None

    def closed(self) -> None:
        self.opened_by = None

    def door(self, closed: bool, now: float) -> list[RoomAction]:
        was, self.door_closed = self.door_closed, closed
        if "door" not in self.triggers or was == closed:
            return []
        if closed and self.opened_by is None:
            self.awaiting_since = now
            return [Prompt()]
        self.awaiting_since = None
        return []

    def key(self, start: bool, now: float) -> list[RoomAction]:
        if start:
            if self.opened_by is not None:
                return []  # already recording
            if self.awaiting:
                return [OpenRoomSession("door")]
            if "key" in self.triggers:
                return [OpenRoomSession("key")]
            why = "the key opens a session only after the door closes"
            return [Refused(why if "door" in self.triggers else "the key is not a trigger here")]
        if self.opened_by is None:
            self.awaiting_since = None  # the key says no: withdraw the prompt
            return []
        if self.opened_by == "command":
            return [Refused("the case system opened this session: it closes it")]
        return [CloseRoomSession("key")]

    def command(self, open_: bool) -> list[RoomAction]:
        if "command" not in self.triggers:
            return [Refused("session commands are not a trigger in this room")]
        if open_:
            return [OpenRoomSession("command")]
        return [CloseRoomSession("command")] if self.opened_by is not None else []

    def tick(self, now: float) -> list[RoomAction]:
        if self.awaiting_since is not None and now - self.awaiting_since > self.confirm_seconds:
            self.awaiting_since = None
        return []


NO_ROOM = "no room assigned: waiting for an assignment (provision assign --room ...)"


def room_lacks(room: str | None) -> str | None:
    """What a room controller lacks to serve its room (None: nothing). Without a room it
    runs and records as configured, but has no panel to hear and no room to name."""
    return None if room else NO_ROOM


def panel_state(recording: bool, awaiting: bool, fault: bool) -> PanelState:
    """What the panel shows. The lamp means recording and nothing else, so a fault while
    recording still shows ``recording`` (the other cameras go on)."""
    if recording:
        return "recording"
    if fault:
        return "fault"
    return "confirm" if awaiting else "idle"


_CORNERS = {
    "top_left": (0, 0),
    "top_right": (0, 1),
    "bottom_left": (1, 0),
    "bottom_right": (1, 1),
}


def close_refusal(
    open_session: str, open_case: str | None, case: str, session: str | None
) -> str | None:
    """Why a case system's close must not close the session open now (None: it names
    it). A close names the case it closes, and may name the session: a close for case A
    never ends case B's interview.

    Example::

        close_refusal("s-1", "B-7", case="A-3", session=None)
        # -> "session_close for case 'A-3': the open session is case 'B-7''s"
    """
    if session is not None and session != open_session:
        return f"session_close names session {session!r}: the open session is {open_session!r}"
    if open_case != case:
        whose = f"case {open_case!r}'s" if open_case else "opened without a case"
        return f"session_close for case {case!r}: the open session is {whose}"
    return None


def open_refusal(open_session: str, open_case: str | None, case: str) -> str | None:
    """Why a case system's open must not act on the session open now (None: it may name
    it — a session opened at the panel, or its own case again). An open for case C never
    relabels case B's running interview: it is refused, and its sender told.

    Example::

        open_refusal("s-1", "B-7", case="C-2")
        # -> "session_open for case 'C-2': case 'B-7''s session s-1 is open: close it first"
    """
    if open_case is not None and open_case != case:
        return (
            f"session_open for case {case!r}: case {open_case!r}'s session {open_session} is "
            "open: close it first"
        )
    return None


def compose_pip(main: Image, inset: Image, divisor: int, corner: str, top: int = 0) -> Image:
    """The main picture with ``inset`` shrunk to 1/``divisor`` (every divisor-th sample of
    each plane: cheap enough for every frame) in a corner, framed by a white border; a new
    YUV 4:2:0 picture. ``top``: rows kept clear at the top edge (the watermark strip)."""
    out = main.copy()
    W, H = yuv.size_of(out)
    w, h = yuv.size_of(inset)
    w, h = (w // divisor) & ~1, (h // divisor) & ~1  # even: whole chroma samples
    margin = max(4, H // 60) & ~1
    down, right = _CORNERS[corner]
    y = H - h - margin if down else max(margin, (top + margin + 1) & ~1)
    x = W - w - margin if right else margin
    for k, (dst, src) in enumerate(zip(yuv.planes(out), yuv.planes(inset), strict=True)):
        s = 1 if k == 0 else 2  # chroma planes are half the size
        y0, x0, hh, ww, b = y // s, x // s, h // s, w // s, 2 // s
        dst[y0 - b : y0 + hh + b, x0 - b : x0 + ww + b] = yuv.WHITE_Y if k == 0 else yuv.NEUTRAL_UV
        dst[y0 : y0 + hh, x0 : x0 + ww] = src[::divisor, ::divisor][:hh, :ww]
    return out

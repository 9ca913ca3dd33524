"""The session state machine: idle → buffering → recording → closing. Pure, no I/O.

Opening is easy (one press, an API call) because a missed start loses evidence. Closing
needs a deliberate act — a long press, or a press confirmed by a second press within a
window — so that a bump against a door frame does not end a recording.

The machine only decides; the recorder carries out the returned actions.

Example::

    m = SessionMachine(prebuffer=True, confirm_window=3.0)
    m.start()                        # -> [] ; state "buffering"
    m.press(now=10.0)                # -> [Action.OPEN]
    m.press(now=20.0)                # -> [Action.ARM_CLOSE]   (LED blinks)
    m.press(now=21.0)                # -> [Action.CLOSE]       (confirmed)
    m.closed()                       # state back to "buffering"
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from common.settings import Category
from evidence.seal import Moment


class State(enum.StrEnum):
    IDLE = "idle"  # camera not capturing (no pre-event buffer configured)
    BUFFERING = "buffering"  # capturing into the pre-event buffer, no session
    RECORDING = "recording"  # a session is open
    CLOSING = "closing"  # the last segment is being sealed


class Action(enum.StrEnum):
    OPEN = "open"
    ARM_CLOSE = "arm_close"  # first press while recording: ask for confirmation
    DISARM_CLOSE = "disarm_close"  # confirmation window passed: keep recording
    CLOSE = "close"


class MarkerType(enum.StrEnum):
    """Acts of R-Art 7-10 that an officer or the case system drops on the timeline."""

    CREDENTIAL_SHOWN = "credential_shown"
    RIGHTS_NOTIFIED = "rights_notified"
    EVIDENCE_COLLECTED = "evidence_collected"
    COERCIVE_MEASURE = "coercive_measure"
    DOCUMENT_SERVED = "document_served"


@dataclass
class OpenSession:
    """The session being recorded: who, since when, and the next segment index per track."""

    id: str
    category: Category
    badges: list[str]
    opened: Moment
    next_index: dict[str, int] = field(default_factory=dict)


class SessionError(RuntimeError):
    """A request that does not fit the session state (e.g. a marker with no session open)."""


@dataclass
class SessionMachine:
    prebuffer: bool
    confirm_window: float = 3.0
    state: State = State.IDLE
    _armed_at: float | None = None
    # The button is still down from the press that opened: its hold must not close.
    _opening_press_down: bool = False

    def start(self) -> None:
        """The device is on duty: capture into the pre-event buffer if there is one."""
        if self.state == State.IDLE and self.prebuffer:
            self.state = State.BUFFERING

    @property
    def close_armed(self) -> bool:
        return self._armed_at is not None

    def press(self, now: float) -> list[Action]:
        """The record button went down (debounced): opens at once when not recording, so
        the trigger is on record however long the officer holds it."""
        if self.state in (State.IDLE, State.BUFFERING):
            actions = self._open()
            self._opening_press_down = True
            return actions
        self._opening_press_down = False
        if self.state == State.RECORDING:
            if self._armed_at is not None and now - self._armed_at <= self.confirm_window:
                return self._close()
            self._armed_at = now
            return [Action.ARM_CLOSE]
        return []

    def hold(self, now: float) -> list[Action]:
        """A long press: closes when recording, unless it is the press that opened (still
        held); opens when not recording."""
        if self.state == State.RECORDING:
            return [] if self._opening_press_down else self._close()
        return self.press(now)

    def release(self) -> None:
        """The record button came back up."""
        self._opening_press_down = False

    def tick(self, now: float) -> list[Action]:
        """Time passes: an unconfirmed close request lapses."""
        if self._armed_at is not None and now - self._armed_at > self.confirm_window:
            self._armed_at = None
            return [Action.DISARM_CLOSE]
        return []

    def open(self) -> list[Action]:
        """Open by API or command (no confirmation needed)."""
        if self.state == State.RECORDING:
            raise SessionError("a session is already open")
        if self.state == State.CLOSING:
            raise SessionError("the previous session is still closing")
        return self._open()

    def close(self) -> list[Action]:
        """Close by API or command: a deliberate act by definition."""
        if self.state != State.RECORDING:
            raise SessionError(f"no session is open (state {self.state})")
        return self._close()

    def recovered(self) -> None:
        """At boot, the last boot's session goes on (power cut inside it)."""
        if self.state == State.CLOSING:
            raise SessionError(f"recovered() in state {self.state}")
        self.state = State.RECORDING
        self._armed_at = None

    def closed(self) -> None:
        """The recorder has sealed the close."""
        if self.state != State.CLOSING:
            raise SessionError(f"closed() in state {self.state}")
        self.state = State.BUFFERING if self.prebuffer else State.IDLE

    def _open(self) -> list[Action]:
        self.state = State.RECORDING
        self._armed_at = None
        self._opening_press_down = False
        return [Action.OPEN]

    def _close(self) -> list[Action]:
        self.state = State.CLOSING
        self._armed_at = None
        return [Action.CLOSE]

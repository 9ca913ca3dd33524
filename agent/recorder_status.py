"""What the recorder shows of itself: the status document, the recording LED, the room
panel's state.

The status is what ``agent status``, the local status file and the uploader's retained
status carry (:meth:`agent.recorder.Recorder.status`); the LED and the panel are what an
officer or a room's occupants see. Read from the recorder's parts through
:class:`ShownState`, so this module needs no recorder of its own.

Example::

    recorder_status(rec)   # {'device': 'BC-0001', 'state': 'idle', 'session': None, ...}
    indicator(rec)         # 'off' | 'on' | 'blink' | 'prompt' | 'deadline'
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.chain import ChainWriter
from agent.frames import FrameRecorder
from agent.interruptions import InterruptionTracker
from agent.room import RoomTriggers, panel_state, room_lacks
from agent.session import OpenSession, SessionMachine


class ShownState(Protocol):
    """The parts of the recorder its status is read from."""

    @property
    def device_id(self) -> str: ...
    @property
    def machine(self) -> SessionMachine: ...
    @property
    def chain(self) -> ChainWriter: ...
    @property
    def tracks(self) -> list[str]: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def room(self) -> RoomTriggers | None: ...
    @property
    def frames(self) -> FrameRecorder: ...
    @property
    def sync_deadline(self) -> str: ...
    @property
    def session(self) -> OpenSession | None: ...
    @property
    def led(self) -> str: ...
    @property
    def badges(self) -> list[str]: ...
    @property
    def gaps(self) -> InterruptionTracker: ...
    @property
    def faults(self) -> set[str]: ...
    @property
    def room_id(self) -> str | None: ...


def panel(r: ShownState) -> str:
    """What the room panel shows; its RECORDING lamp is lit exactly on ``recording``."""
    return panel_state(r.session is not None, bool(r.room and r.room.awaiting), bool(r.faults))


def indicator(r: ShownState) -> str:
    """What the recording LED shows: off, on, blink (close armed), prompt (explain),
    deadline (not recording, and a recording nears or passed its 24 hours unsynced)."""
    if r.session and r.gaps.prompting and r.led == "on":
        return "prompt"
    if r.session is None and r.sync_deadline in ("warn", "urgent", "overdue"):
        return "deadline"
    return r.led


def recorder_status(r: ShownState) -> dict[str, Any]:
    return {
        "device": r.device_id,
        "state": r.machine.state.value,
        "session": r.session.id if r.session else None,
        "close_armed": r.machine.close_armed,
        "led": r.led,
        "badges": r.badges,
        "chain_head": r.chain.head[0],
        "last_error": r.last_error,
        "interrupted": sorted(r.gaps.active),
        "tracks": r.tracks,
        "room": r.room_id if r.room else None,
        "panel": panel(r) if r.room else None,
        # what a room controller lacks to serve a room ("no room assigned: …")
        "room_problem": room_lacks(r.room_id) if r.room else None,
        "explain_prompt": r.gaps.prompting,
        "unexplained": list(r.gaps.unexplained),
        "load": r.frames.load(),
    }

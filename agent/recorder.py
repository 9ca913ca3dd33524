"""The recorder: turns frames, audio and position into sealed segments of sessions.

It runs on one thread, one frame at a time (:meth:`Recorder.step`), so everything it does
is ordered and testable without threads. Buttons and other threads only *post* events;
``step`` drains them between frames. :class:`Recorder` is a façade; each job is a
collaborator's: capture and picture (:mod:`agent.capture`), segments and the pre-event
buffer (:mod:`agent.segments`), interruptions and health checks (:mod:`agent.continuity`),
the session lifecycle (:mod:`agent.lifecycle`), boot recovery (:mod:`agent.boot`), the room
(:mod:`agent.room_control`), agency commands (:mod:`agent.agency_commands`), what it shows
of itself (:mod:`agent.recorder_status`), and sealing (:mod:`agent.chain`, the only way
anything is sealed).

A failing request (a marker with no session, a malformed command) raises or is logged,
but never stops the frame loop: recording goes on.

Example::

    rec = Recorder(root, config, hardware, clock)
    rec.start()                      # boot entry; capture into the pre-event buffer
    rec.post(RECORD_PRESS)           # from a button thread
    for _ in range(60):
        rec.step(); clock.advance(1 / 30)
    rec.mark(MarkerType.CREDENTIAL_SHOWN)
    rec.close_session()
    rec.stop()
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from nacl.public import PublicKey

from agent import recorder_status
from agent.agency_commands import AgencyCommands
from agent.at_rest import agency_evidence_key
from agent.board import board_model
from agent.boot import BootRecovery, seal_boot
from agent.capture import Capture
from agent.chain import ChainWriter
from agent.config import assigned_badges
from agent.continuity import Continuity
from agent.device_lock import hold_lock
from agent.enrolment import finish_rotation
from agent.frames import FrameRecorder
from agent.identity import load_or_create_identity
from agent.interruptions import InterruptionTracker
from agent.journal.chain_index import Journal
from agent.keys import load_or_create_key
from agent.lifecycle import SessionLifecycle
from agent.markers import position, typed_marker
from agent.room import OpenRoomSession, RoomTriggers
from agent.room_control import RoomControl
from agent.segments import Segmenter
from agent.session import MarkerType, OpenSession, SessionError, SessionMachine, State
from agent.watermark import Watermark
from common.settings import Category, DeviceConfig
from device.clock import Clock
from device.controls import MARKER_PRESS, RECORD_HOLD, RECORD_PRESS, RECORD_RELEASE
from device.hardware import Hardware, SimHardware
from evidence.entries import Shutdown
from evidence.layout import SEGMENTS
from evidence.names import ProvisionError
from evidence.seal import Entry
from evidence.session_bodies import Marker

log = logging.getLogger(__name__)


class Recorder:
    """A small façade: the public API over the collaborators that do the work."""

    def __init__(
        self,
        root: Path,
        config: DeviceConfig,
        hardware: Hardware,
        clock: Clock,
        evidence_key: PublicKey | None = None,
        seal_in_background: bool = False,
    ) -> None:
        """``evidence_key``: the agency key footage is encrypted to (default: the installed
        bundle's; :class:`~agent.at_rest.EvidenceKeyError` when there is none and the
        settings do not turn encryption off). ``seal_in_background``: closed segments are
        sealed on the chain's own thread, never holding up a frame (the device in real
        time); otherwise at once, on the caller's thread (simulated time, tests)."""
        self.root = Path(root)
        self.config = config
        self.hw = hardware
        self.clock = clock
        (self.root / SEGMENTS).mkdir(parents=True, exist_ok=True)
        self._lock = hold_lock(self.root)  # one sealer per chain: a second would fork it
        finish_rotation(self.root)
        self.journal = Journal(self.root)
        self._last_before_boot = self.journal.last()
        key = load_or_create_key(self.root)
        simulated = isinstance(hardware, SimHardware)
        identity = load_or_create_identity(self.root, key.verify_key, board_model(simulated))
        self.chain = ChainWriter(
            self.journal, key, identity.device_id, clock, background=seal_in_background
        )
        self.device_id = self.chain.device_id
        self.tracks = config.tracks
        self.capture = Capture(config, hardware.cameras, self.device_id)
        self.last_error: str | None = None
        self.sync_deadline = "ok"  # set by the uploader's thread: the 24-hour rule
        self.machine = SessionMachine(
            prebuffer=config.recording.prebuffer_seconds > 0,
            confirm_window=config.controls.confirm_seconds,
        )
        if evidence_key is None or not config.storage.encrypt:
            evidence_key = agency_evidence_key(self.root, config)
        self.segments = Segmenter(
            self.root,
            config,
            self.chain,
            clock,
            lambda: self.session,
            lambda: self.badges,
            evidence_key,
        )
        self.continuity = Continuity(config, self.chain, lambda: self.session, self._error)
        self.room = (
            RoomTriggers(config.room.triggers, config.room.confirm_seconds) if config.room else None
        )
        self.life = SessionLifecycle(
            config,
            self.chain,
            self.machine,
            self.segments,
            self.continuity,
            self.room,
            lambda: self.commands.room_id,
            assigned_badges(self.root) or list(config.session.badges),
        )
        self._room = (
            RoomControl(self.room, self.life, self.chain, clock, self._error) if self.room else None
        )
        self.commands = AgencyCommands(self.root, self.chain, self.life, self._room)
        self._events: queue.SimpleQueue[str | Callable[[], object]] = queue.SimpleQueue()
        self.posted = threading.Event()  # something was posted: the waiting loop handles it
        self._frames_since_check = 0
        self.frames = FrameRecorder(
            config, hardware, clock, self.capture, self.segments, self.continuity
        )
        self.powered_off = False

    # -- what the collaborators hold, as the recorder's own -----------------------------

    @property
    def room_id(self) -> str | None:
        return self.commands.room_id

    @property
    def session(self) -> OpenSession | None:
        return self.life.session

    @property
    def badges(self) -> list[str]:
        return self.life.badges

    @badges.setter
    def badges(self, badges: list[str]) -> None:
        self.life.badges = list(badges)

    @property
    def paused(self) -> bool:
        return self.life.paused

    @property
    def led(self) -> str:
        return self.life.led

    @property
    def gaps(self) -> InterruptionTracker:
        return self.continuity.gaps

    @property
    def faults(self) -> set[str]:
        return self.continuity.faults

    @property
    def watermarks(self) -> dict[str, Watermark]:
        return self.capture.watermarks

    @property
    def pictures(self) -> dict[str, np.ndarray]:
        """The last watermarked picture of each track, for a live preview."""
        return self.capture.pictures

    @property
    def segment_started(self) -> bool:
        """Whether a segment is being written and every track has a frame in it."""
        seg = self.segments.segment
        return seg is not None and all(w.frames > 0 for w in seg.writers.values())

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        seal_boot(self.chain, self.journal, self.config)
        recovery = BootRecovery(self.config, self.chain, self.segments, self.continuity)
        recovery.recover(self.life.resume, self._last_before_boot)
        self.capture.start()
        self.machine.start()

    def stop(self, reason: str = "stop", close_session: bool = True) -> None:
        """Power down cleanly. A session still open is closed first, unless the device is
        shutting down inside it (battery): then the gap stays open until the next boot."""
        if self.machine.state == State.RECORDING and close_session:
            self.life.act(self.machine.close())
        if self.segments.segment:
            if self.session:
                self.segments.end()  # keep every frame of an open session
            else:
                self.segments.abandon()
        self.chain.seal_body(Shutdown(reason))
        if not self.session:
            self.segments.clean_spool()
        self.capture.stop()
        self.journal.close()
        self.powered_off = True
        os.close(self._lock)

    # -- requests (API, buttons) ----------------------------------------------------

    def post(self, event: str | Callable[[], object]) -> None:
        """Thread-safe: queue a control event (or a call, e.g. a verified command);
        handled on the recording thread before the next frame. A button's event is
        handled at once while the frame loop waits for the next frame's time (it sets
        :attr:`posted`, which wakes the loop): the session a press opens is then open
        when that frame comes."""
        self._events.put(event)
        if isinstance(event, str):
            self.posted.set()

    def handle_events(self) -> None:
        """Handle what was posted (the recording thread): a session a press opens is
        open, its entry sealed, when the next frame's time comes."""
        self.posted.clear()
        while not self._events.empty():
            self._handle(self._events.get())

    def open_session(
        self, category: Category | str | None = None, badges: list[str] | None = None
    ) -> str:
        category = Category(category) if category else self.config.session.category
        if badges is not None:
            self.badges = list(badges)
        if self._room:  # opened on the controller itself (API, `agent run --open`)
            self._room.act([OpenRoomSession("api")], category=category)
        else:
            self.life.act(self.machine.open(), category)
        assert self.session
        return self.session.id

    def close_session(self) -> None:
        self.life.act(self.machine.close())

    def apply_command(self, data: bytes) -> Entry | None:
        """An agency-signed command that arrived over MQTT (an assignment, or the case
        system opening or closing a room session): verified and sealed on the recording
        thread, on this recorder's chain. A forged, foreign, expired or replayed command
        is ignored and logged; recording goes on."""
        try:
            return self.commands.apply(data, self.clock.wall())
        except (ProvisionError, SessionError) as e:
            self._error(f"command refused: {e}")
            return None

    # -- the interview room ------------------------------------------------------------

    def room_input(self, what: str, payload: bytes) -> None:
        """Thread-safe: the room panel said something (``door`` open/closed, ``key``
        start/stop); decided on the recording thread. Anything else is refused and logged."""
        self.post(lambda: self._room_input(what, payload))

    def _room_input(self, what: str, payload: bytes) -> None:
        if self._room is None:
            raise SessionError(f"panel input {what!r} on a body recorder: ignored")
        self._room.panel(what, payload)

    @property
    def panel_state(self) -> str:
        """What the room panel shows (:func:`agent.recorder_status.panel`)."""
        return recorder_status.panel(self)

    def mark(self, marker: MarkerType | str, note: str = "") -> Entry:
        """Drop a typed marker on the open session's timeline (R2)."""
        marker = typed_marker(marker)
        if self.session is None:
            raise SessionError("no session is open: a marker needs one")
        where = position(self.hw.gnss.state(), self.clock.monotonic())
        body = Marker.new(marker.value, note, where)
        return self.chain.seal_body(body, self.session.id)

    def pause(self, reason: str = "") -> None:
        """The officer stops recording while the session stays open: an interruption
        (``officer_stop``) until :meth:`resume`, explained like any other."""
        self.life.officer_pause(reason)

    def resume(self) -> None:
        self.life.officer_resume()

    def explain(self) -> bool:
        """The explain control: the oldest gap awaiting a spoken explanation gets one,
        starting now (button mode)."""
        return self.gaps.explain_pressed(self.chain.now())

    # -- the frame loop ------------------------------------------------------------

    def step(self) -> bool:
        """Handle queued events, then capture, watermark and encode one frame
        (:mod:`agent.frames`: faults never stop the loop). Returns whether real time was
        lost before the frame (sealed as an ``overload`` gap)."""
        if self.powered_off:
            return False
        self.handle_events()
        now = self.clock.monotonic()
        self.life.act(self.machine.tick(now))
        self.continuity.tick()
        if self.machine.state == State.IDLE:
            return False
        self.continuity.check_clock()
        self._frames_since_check += 1
        if self._frames_since_check >= self.config.recording.fps:
            self._frames_since_check = 0
            if self.continuity.power_critical(self.hw.battery):
                self.stop(reason="battery", close_session=False)
                return False
            self.frames.check_storage()
        self.frames.record(self.badges, self.room_id, self.paused)
        return self.frames.lost

    # -- internals -------------------------------------------------------------------

    def _handle(self, event: str | Callable[[], object]) -> None:
        now = self.clock.monotonic()
        try:
            if callable(event):
                event()
            elif event == RECORD_PRESS:
                self.life.act(self.machine.press(now))
            elif event == RECORD_HOLD:
                self.life.act(self.machine.hold(now))
            elif event == RECORD_RELEASE:
                self.machine.release()
            elif event == MARKER_PRESS:
                self.mark(self.config.controls.marker_type)
            else:
                raise SessionError(f"unknown control event {event!r}")
        except (SessionError, ValueError) as e:
            self._error(str(e))

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    @property
    def indicator(self) -> str:
        """What the recording LED shows (:func:`agent.recorder_status.indicator`)."""
        return recorder_status.indicator(self)

    def status(self) -> dict[str, Any]:
        return recorder_status.recorder_status(self)

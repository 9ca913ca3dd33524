"""The recorder: turns frames, audio and position into sealed segments of sessions.

It runs on one thread, one frame at a time (:meth:`Recorder.step`), so everything it does
is ordered and testable without threads. Buttons and other threads only *post* events;
``step`` drains them between frames. Decisions are delegated to pure parts: the session
state machine (:mod:`agent.session`), the watermark text, the sealer (:mod:`evidence.seal`).

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

import hashlib
import json
import logging
import os
import queue
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import DeviceConfig, assigned_badges
from agent.evidence_dir import SEGMENTS, SPOOL, fsync_dir, segment_name
from agent.identity import load_or_create_identity
from agent.journal import Journal
from agent.keys import load_or_create_key
from agent.media import AUDIO_CODEC, VIDEO_CODEC, SegmentWriter, WrittenSegment
from agent.session import Action, Category, MarkerType, SessionError, SessionMachine, State
from agent.watermark import Watermark, find_font, watermark_text
from device.camera import Camera, CameraError
from device.clock import Clock
from device.controls import MARKER_PRESS, RECORD_HOLD, RECORD_PRESS
from device.gnss import Gnss, GnssState
from device.microphone import Microphone, MicrophoneError
from evidence.seal import Entry, Moment, Sealer

log = logging.getLogger(__name__)

SOFTWARE = "unbroken 0.1.0"


@dataclass
class Hardware:
    camera: Camera
    microphone: Microphone
    gnss: Gnss


@dataclass
class _Segment:
    """The segment being written, and what the manifest will need to say about it."""

    writer: SegmentWriter
    start: Moment
    positions: list[tuple[float, float] | None] = field(default_factory=list)
    max_fix_age: float | None = None
    audio_ok: bool = True


@dataclass
class _Buffered:
    """A closed pre-event segment waiting in the spool: sealed if a session opens in time."""

    written: WrittenSegment
    start: Moment
    end: Moment
    location: dict[str, Any]
    audio_ok: bool


@dataclass
class _Session:
    id: str
    category: Category
    badges: list[str]
    opened: Moment
    next_index: int = 0


class Recorder:
    def __init__(self, root: Path, config: DeviceConfig, hardware: Hardware, clock: Clock) -> None:
        self.root = Path(root)
        self.config = config
        self.hw = hardware
        self.clock = clock
        rec = config.recording
        self._segment_frames = rec.fps * rec.segment_seconds
        self._spf = rec.audio_rate // rec.fps
        for d in (SEGMENTS, SPOOL):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.root)
        key = load_or_create_key(self.root)
        identity = load_or_create_identity(self.root, key.verify_key)
        self.sealer = Sealer(key, identity.device_id, self.journal.last())
        self.device_id = self.sealer.device_id
        self.machine = SessionMachine(
            prebuffer=rec.prebuffer_seconds > 0, confirm_window=config.controls.confirm_seconds
        )
        self.watermark = Watermark(rec.width, rec.height, find_font(config.watermark.font))
        self.badges: list[str] = assigned_badges(self.root) or list(config.session.badges)
        self.session: _Session | None = None
        self._events: queue.SimpleQueue[str | Callable[[], object]] = queue.SimpleQueue()
        self._segment: _Segment | None = None
        self._buffer: deque[_Buffered] = deque()
        self._frame_no = 0  # frames since capture started: the media timeline
        self.led = "off"
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        settings = self.config.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self._seal("boot", {"software": SOFTWARE, "config_sha256": digest})
        last_config = next(reversed(list(self.journal.entries("config"))), None)
        if last_config is None or last_config.body.get("sha256") != digest:
            self._seal("config", {"sha256": digest, "settings": settings})
        if not self._session_left_open():
            self._clean_spool()
        self.hw.camera.start()
        self.machine.start()

    def stop(self) -> None:
        """Power down cleanly: a session still open is closed first."""
        if self.machine.state == State.RECORDING:
            self._close()
        if self._segment:
            self._segment.writer.abandon()
            self._segment.writer.path.unlink(missing_ok=True)
            self._segment = None
        self._clean_spool()
        self.hw.camera.stop()
        self.journal.close()

    # -- requests (API, buttons) ----------------------------------------------------

    def post(self, event: str | Callable[[], object]) -> None:
        """Thread-safe: queue a control event (or a call, e.g. a verified command);
        handled on the recording thread before the next frame."""
        self._events.put(event)

    def open_session(
        self, category: Category | str | None = None, badges: list[str] | None = None
    ) -> str:
        category = Category(category) if category else self.config.session.category
        if badges is not None:
            self.badges = list(badges)
        self._act(self.machine.open(), category)
        assert self.session
        return self.session.id

    def close_session(self) -> None:
        self._act(self.machine.close())

    def mark(self, marker: MarkerType | str, note: str = "") -> Entry:
        """Drop a typed marker on the open session's timeline (R2)."""
        try:
            marker = MarkerType(marker)
        except ValueError:
            raise SessionError(
                f"unknown marker type {marker!r}; one of {', '.join(m.value for m in MarkerType)}"
            ) from None
        if self.session is None:
            raise SessionError("no session is open: a marker needs one")
        body = {"type": marker.value, "note": note, "location": self._position_now()}
        return self._seal("marker", body, self.session.id)

    # -- the frame loop ------------------------------------------------------------

    def step(self) -> None:
        """Handle queued events, then capture, watermark and encode one frame."""
        while not self._events.empty():
            self._handle(self._events.get())
        now = self.clock.monotonic()
        self._act(self.machine.tick(now))
        if self.machine.state == State.IDLE:
            return
        try:
            frame = self.hw.camera.read()
        except CameraError as e:
            self._error(f"camera: {e}")
            return
        gnss = self.hw.gnss.state()
        wall = self.clock.wall() - (self.clock.monotonic() - frame.captured)
        self.watermark.apply(
            frame.image,
            watermark_text(
                wall,
                self.clock.utc_offset(),
                self.clock.synced(),
                gnss,
                frame.captured,
                self.badges,
                self.device_id,
                self.config.watermark.labels,
            ),
        )
        try:
            samples = self.hw.microphone.read(self._spf)
        except MicrophoneError as e:
            self._error(f"microphone: {e}")
            samples = None
        seg = self._segment or self._begin_segment(frame.captured, wall)
        seg.writer.add(frame.image, samples)
        seg.audio_ok &= samples is not None
        self._note_position(seg, gnss, frame.captured)
        self._frame_no += 1
        if seg.writer.frames >= self._segment_frames:
            self._end_segment()

    # -- internals -------------------------------------------------------------------

    def _handle(self, event: str | Callable[[], object]) -> None:
        now = self.clock.monotonic()
        try:
            if callable(event):
                event()
            elif event == RECORD_PRESS:
                self._act(self.machine.press(now))
            elif event == RECORD_HOLD:
                self._act(self.machine.hold(now))
            elif event == MARKER_PRESS:
                self.mark(self.config.controls.marker_type)
            else:
                raise SessionError(f"unknown control event {event!r}")
        except (SessionError, ValueError) as e:
            self._error(str(e))

    def _act(self, actions: list[Action], category: Category | None = None) -> None:
        for a in actions:
            if a == Action.OPEN:
                self._open(category or self.config.session.category)
            elif a == Action.CLOSE:
                self._close()
            elif a == Action.ARM_CLOSE:
                self.led = "blink"
            elif a == Action.DISARM_CLOSE:
                self.led = "on"

    def _open(self, category: Category) -> None:
        at = self._moment()
        sid = str(uuid.uuid4())
        self._seal(
            "session_open",
            {
                "category": category.value,
                "badges": self.badges,
                "prebuffer_seconds": self.config.recording.prebuffer_seconds,
            },
            sid,
        )
        self.session = _Session(sid, category, list(self.badges), at)
        # Pre-event footage becomes the session's first segments, so arrival is on record.
        window = self.config.recording.prebuffer_seconds
        for b in self._buffer:
            if b.end.mono > at.mono - window:
                self._seal_segment(b.written, b.start, b.end, b.location, b.audio_ok)
            else:
                b.written.path.unlink(missing_ok=True)
        self._buffer.clear()
        if self._segment is None:
            # From idle (no buffer): start now, and fast, so the trigger is on record.
            self._begin_segment(at.mono, at.wall)
        self.led = "on"

    def _close(self) -> None:
        assert self.session
        if self._segment and self._segment.writer.frames:
            self._end_segment()
        self._seal("session_close", {"segments": self.session.next_index}, self.session.id)
        self.session = None
        self.machine.closed()
        self.led = "off"

    def _begin_segment(self, mono: float, wall: float) -> _Segment:
        path = self.root / SPOOL / f"{self._frame_no:012d}.mp4"
        writer = SegmentWriter(path, self.config.recording, first_frame=self._frame_no)
        self._segment = _Segment(writer, Moment(wall, mono, self.clock.synced()))
        return self._segment

    def _end_segment(self) -> None:
        seg = self._segment
        assert seg
        self._segment = None
        written = seg.writer.close()
        fps = self.config.recording.fps
        end = Moment(
            seg.start.wall + written.frames / fps,
            seg.start.mono + written.frames / fps,
            self.clock.synced(),
        )
        location = _location_summary(seg)
        if self.session:
            self._seal_segment(written, seg.start, end, location, seg.audio_ok)
            return
        self._buffer.append(_Buffered(written, seg.start, end, location, seg.audio_ok))
        window = self.config.recording.prebuffer_seconds
        while self._buffer and self._buffer[0].end.mono <= end.mono - window:
            self._buffer.popleft().written.path.unlink(missing_ok=True)

    def _seal_segment(
        self,
        w: WrittenSegment,
        start: Moment,
        end: Moment,
        location: dict[str, Any],
        audio_ok: bool,
    ) -> None:
        s = self.session
        assert s
        rel = segment_name(s.id, s.next_index)
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(w.path, dest)
        fsync_dir(dest.parent)
        rec = self.config.recording
        before_open = max(0.0, s.opened.mono - start.mono)
        body = {
            "index": s.next_index,
            "file": rel,
            "sha256": w.sha256,
            "size": w.size,
            "start": start.as_dict(),
            "end": end.as_dict(),
            "media": {
                "container": "mp4/fragmented",
                "video": {
                    "codec": VIDEO_CODEC,
                    "width": rec.width,
                    "height": rec.height,
                    "fps": rec.fps,
                    "keyframe_seconds": rec.keyframe_seconds,
                    "frames": w.frames,
                    "first_frame": w.first_frame,
                },
                "audio": (
                    {
                        "codec": AUDIO_CODEC,
                        "rate": rec.audio_rate,
                        "channels": 1,
                        "samples": w.audio_samples,
                    }
                    if audio_ok and w.audio_samples
                    else None
                ),
            },
            "prebuffer": before_open > 0,
            "prebuffer_seconds": round(before_open, 6),
            "location": location,
            "badges": s.badges,
        }
        s.next_index += 1
        self._seal("segment", body, s.id)

    def _seal(self, kind: str, body: dict[str, Any], session: str | None = None) -> Entry:
        entry = self.sealer.seal(kind, body, self._moment(), session)
        self.journal.append(entry)
        return entry

    def _moment(self) -> Moment:
        return Moment(self.clock.wall(), self.clock.monotonic(), self.clock.synced())

    def _position_now(self) -> dict[str, Any]:
        st = self.hw.gnss.state()
        fix = st.last_fix
        return {
            "fix": st.has_fix,
            "lat": fix.lat if fix else None,
            "lon": fix.lon if fix else None,
            "age": st.age(self.clock.monotonic()),
        }

    def _note_position(self, seg: _Segment, gnss: GnssState, now: float) -> None:
        fix = gnss.last_fix
        seg.positions.append((fix.lat, fix.lon) if gnss.has_fix and fix else None)
        age = gnss.age(now)
        if not gnss.has_fix and age is not None:
            seg.max_fix_age = max(seg.max_fix_age or 0.0, age)

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    def _clean_spool(self) -> None:
        # Spooled footage outside any session is not evidence and may go.
        for p in (self.root / SPOOL).glob("*.mp4"):
            p.unlink(missing_ok=True)

    def _session_left_open(self) -> bool:
        """Whether the last boot ended inside a session (power cut): then the spool holds
        evidence of that session and must be kept for recovery."""
        rows = list(
            self.journal.db.query(
                "select kind from entries where kind in ('session_open', 'session_close') "
                "order by seq desc limit 1"
            )
        )
        return bool(rows) and rows[0]["kind"] == "session_open"

    def status(self) -> dict[str, Any]:
        return {
            "device": self.device_id,
            "state": self.machine.state.value,
            "session": self.session.id if self.session else None,
            "close_armed": self.machine.close_armed,
            "led": self.led,
            "badges": self.badges,
            "chain_head": self.sealer.head[0],
            "last_error": self.last_error,
        }


def _location_summary(seg: _Segment) -> dict[str, Any]:
    fixes = [p for p in seg.positions if p]
    if not fixes:
        quality = "none"
    elif len(fixes) == len(seg.positions):
        quality = "ok"
    else:
        quality = "partial"
    return {
        "fix": quality,
        "start": list(fixes[0]) if fixes else None,
        "end": list(fixes[-1]) if fixes else None,
        "max_fix_age": None if seg.max_fix_age is None else round(seg.max_fix_age, 3),
    }

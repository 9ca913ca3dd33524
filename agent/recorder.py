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

import errno
import fcntl
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

import av
import numpy as np

from agent.config import assigned_badges, assigned_room
from agent.enrolment import (
    LOCK,
    apply_assignment,
    checked_command,
    finish_rotation,
    remember_command,
)
from agent.evidence_dir import PRIVATE, SEGMENTS, SPOOL, segment_name
from agent.identity import load_or_create_identity
from agent.interruptions import InterruptionTracker, Started, _Pending, fault_key
from agent.journal import Journal
from agent.keys import load_or_create_key
from agent.media import AUDIO_CODEC, VIDEO_CODEC, SegmentWriter, WrittenSegment, probe
from agent.recovery import read_sidecar, sidecar, truncate_to_fragments, write_sidecar
from agent.room import (
    Close,
    Open,
    Prompt,
    Refused,
    RoomAction,
    RoomTriggers,
    compose_pip,
    panel_state,
)
from agent.session import Action, MarkerType, SessionError, SessionMachine, State
from agent.watermark import Watermark, find_font, watermark_text
from common.commands import Command, SessionArgs
from common.files import fsync_dir
from common.settings import MAIN_TRACK, Category, DeviceConfig
from device.camera import CameraError, VideoFrame
from device.clock import Clock
from device.controls import MARKER_PRESS, RECORD_HOLD, RECORD_PRESS
from device.gnss import GnssState
from device.hardware import Hardware
from device.microphone import MicrophoneError
from evidence.names import ProvisionError
from evidence.seal import Entry, Moment, Sealer

log = logging.getLogger(__name__)

SOFTWARE = "unbroken 0.1.0"


@dataclass
class _Segment:
    """The segment being written — one file per track, cut at the same frame — and what
    the manifests will need to say about it."""

    writers: dict[str, SegmentWriter]
    start: Moment
    positions: list[tuple[float, float] | None] = field(default_factory=list)
    max_fix_age: float | None = None
    audio_ok: bool = True

    @property
    def frames(self) -> int:
        return next(iter(self.writers.values())).frames


@dataclass
class _Buffered:
    """A closed pre-event segment waiting in the spool: sealed if a session opens in time."""

    written: dict[str, WrittenSegment]
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
    next_index: dict[str, int] = field(default_factory=dict)  # by track


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
        self._lock = _hold_lock(self.root)  # one sealer per chain: a second would fork it
        finish_rotation(self.root)
        self.journal = Journal(self.root)
        self._last_before_boot = self.journal.last()
        key = load_or_create_key(self.root)
        identity = load_or_create_identity(self.root, key.verify_key)
        self.sealer = Sealer(key, identity.device_id, self.journal.last())
        self.device_id = self.sealer.device_id
        self.machine = SessionMachine(
            prebuffer=rec.prebuffer_seconds > 0, confirm_window=config.controls.confirm_seconds
        )
        self.tracks = config.tracks
        cameras = config.room.cameras if config.room else [MAIN_TRACK]
        if sorted(hardware.cameras) != sorted(cameras):
            raise ValueError(f"cameras {sorted(hardware.cameras)} do not match tracks {cameras}")
        self._feeds = {name: _fed_by(config, name) for name in cameras}  # camera -> tracks
        font = find_font(config.watermark.font)
        self.watermarks = {t: Watermark(rec.width, rec.height, font) for t in self.tracks}
        self.room = (
            RoomTriggers(config.room.triggers, config.room.confirm_seconds) if config.room else None
        )
        self.room_id = assigned_room(self.root)
        self.badges: list[str] = assigned_badges(self.root) or list(config.session.badges)
        self.session: _Session | None = None
        self._events: queue.SimpleQueue[str | Callable[[], object]] = queue.SimpleQueue()
        self._segment: _Segment | None = None
        self._buffer: deque[_Buffered] = deque()
        self._frame_no = 0  # frames since capture started: the media timeline
        self.led = "off"
        self.last_error: str | None = None
        c = config.continuity
        self.gaps = InterruptionTracker(c.explain_seconds, c.explain_mode, c.explain_timeout)
        self.faults: set[str] = set()  # present now, in a session or not
        self.powered_off = False
        self.paused = False
        self._had_fix: bool | None = None
        self.sync_deadline = "ok"  # set by the uploader's thread: the 24-hour rule
        self._wall_offset: float | None = None
        self._frames_since_check = 0
        self._storage_full = False
        self._storage_warned = False
        self._degraded = False  # lower bitrate: the disk is nearly full
        self._silence = np.zeros(self._spf, np.int16)
        self._black = np.zeros((rec.height, rec.width, 3), np.uint8)
        # The last watermarked picture of each track, for a live preview (simulator panel).
        self.pictures: dict[str, np.ndarray] = {}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        settings = self.config.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self._seal("boot", {"software": SOFTWARE, "config_sha256": digest})
        last_config = next(reversed(list(self.journal.entries("config"))), None)
        if last_config is None or last_config.body.get("sha256") != digest:
            self._seal("config", {"sha256": digest, "settings": settings})
        self._recover()
        for camera in self.hw.cameras.values():
            camera.start()
        self.machine.start()

    def stop(self, reason: str = "stop", close_session: bool = True) -> None:
        """Power down cleanly. A session still open is closed first, unless the device is
        shutting down inside it (battery): then the gap stays open until the next boot."""
        if self.machine.state == State.RECORDING and close_session:
            self._act(self.machine.close())
        if self._segment:
            if self.session:
                self._end_segment()  # keep every frame of an open session
            else:
                self._abandon_segment()
        self._seal("shutdown", {"reason": reason})
        if not self.session:
            self._clean_spool()
        for camera in self.hw.cameras.values():
            camera.stop()
        self.journal.close()
        self.powered_off = True
        os.close(self._lock)

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
        if self.room:  # opened on the controller itself (API, `agent run --open`)
            self._room_act([Open("api")], {}, category)
        else:
            self._act(self.machine.open(), category)
        assert self.session
        return self.session.id

    def apply_command(self, data: bytes) -> Entry | None:
        """An agency-signed command that arrived over MQTT (an assignment, or the case
        system opening or closing a room session): verified and sealed on the recording
        thread, by this recorder's sealer. A forged, foreign, expired or replayed command
        is ignored and logged; recording goes on."""
        now = self.clock.wall()
        try:
            cmd = checked_command(self.root, self.journal, data, now)
            if isinstance(cmd.args, SessionArgs):
                entry = self._case_command(cmd, cmd.args)
                if entry is not None:
                    remember_command(self.journal, cmd, entry.seq, now)
            else:
                entry = apply_assignment(
                    self.root,
                    self.journal,
                    cmd,
                    data,
                    now,
                    lambda body: self._seal("assignment", body),
                )
                self.badges = list(entry.body.get("badges") or [])
                self.room_id = assigned_room(self.root)
        except (ProvisionError, SessionError) as e:
            self._error(f"command refused: {e}")
            return None
        return entry

    # -- the interview room ------------------------------------------------------------

    def room_input(self, what: str, payload: bytes) -> None:
        """Thread-safe: the room panel said something (``door`` open/closed, ``key``
        start/stop); decided on the recording thread. Anything else is refused and logged."""
        self.post(lambda: self._room_input(what, payload))

    @property
    def panel_state(self) -> str:
        """What the room panel shows; its RECORDING lamp is lit exactly on ``recording``."""
        return panel_state(
            self.session is not None, bool(self.room and self.room.awaiting), bool(self.faults)
        )

    def _room_input(self, what: str, payload: bytes) -> None:
        if self.room is None:
            raise SessionError(f"panel input {what!r} on a body recorder: ignored")
        value = payload.decode("utf-8", "replace").strip()
        now = self.clock.monotonic()
        if what == "door" and value in ("open", "closed"):
            actions = self.room.door(value == "closed", now)
        elif what == "key" and value in ("start", "stop"):
            actions = self.room.key(value == "start", now)
        else:
            raise SessionError(f"panel sent {what}={value[:40]!r}: not a door or key state")
        self._room_act(actions, {})

    def _case_command(self, cmd: Command, args: SessionArgs) -> Entry | None:
        if self.room is None:
            raise SessionError(f"{cmd.command}: this device serves no room")
        opening = cmd.command == "session_open"
        actions = self.room.command(opening)
        for refused in (a for a in actions if isinstance(a, Refused)):
            raise SessionError(refused.why)
        try:
            category = Category(args.category) if args.category else None
        except ValueError:
            raise SessionError(f"unknown category {args.category!r}") from None
        facts = {
            "case": args.case,
            "person": args.person,
            "command": {"nonce": cmd.nonce, "issued": cmd.issued, "agency": cmd.agency},
        }
        if opening:
            if args.badges:
                self.badges = list(args.badges)
            if self.session is not None:  # opened at the panel: the case system names it
                return self._seal("event", {"type": "case", **facts}, self.session.id)
        elif self.session is None:
            raise SessionError(f"session_close for case {args.case}: no session is open")
        return self._room_act(actions, facts, category)

    def _room_act(
        self,
        actions: list[RoomAction],
        facts: dict[str, Any],
        category: Category | None = None,
    ) -> Entry | None:
        """Carry out the room's decisions; returns the session entry sealed, if any."""
        entry = None
        for a in actions:
            if isinstance(a, Open):
                self._act(self.machine.open(), category, {**facts, "trigger": a.trigger})
                assert self.room
                self.room.opened(a.trigger)
                entry = self.journal.last()
            elif isinstance(a, Close):
                self._act(self.machine.close(), extra={**facts, "trigger": a.trigger})
                entry = self.journal.last()
            elif isinstance(a, Refused):
                self._error(a.why)
            elif isinstance(a, Prompt):
                log.info("door closed: waiting for the key to confirm")
        return entry

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
        """Handle queued events, then capture, watermark and encode one frame.

        Faults never stop the loop: a failed camera is replaced by black frames (the
        audio goes on), a failed microphone by silence, a full disk pauses writing; each
        is an interruption of the open session, ended when the fault clears."""
        if self.powered_off:
            return
        while not self._events.empty():
            self._handle(self._events.get())
        now = self.clock.monotonic()
        self._act(self.machine.tick(now))
        for ex in self.gaps.tick(self._moment()):
            self._seal_explanation(ex.id, ex.start, ex.end)
        if self.machine.state == State.IDLE:
            return
        self._check_clock()
        self._frames_since_check += 1
        if self._frames_since_check >= self.config.recording.fps:
            self._frames_since_check = 0
            self._check_power()
            if self.powered_off:
                return
            self._check_storage()
        frames: dict[str, VideoFrame] = {}
        faults: dict[str, str] = {}
        for name, camera in self.hw.cameras.items():
            try:
                frames[name] = camera.read()
                self._clear("camera", self._feeds[name])
            except CameraError as e:
                self._fault("camera", ["video"], str(e), tracks=self._feeds[name])
                frames[name] = VideoFrame(self._black.copy(), now, -1)
                faults[name] = "  CAMERA FAULT"
        frame = next(iter(frames.values()))  # its capture time stands for all tracks
        try:
            samples = self.hw.microphone.read(self._spf)
            self._clear("microphone")
        except MicrophoneError as e:
            self._fault("microphone", ["audio"], str(e))
            samples = None
        gnss = self.hw.gnss.state()
        self._note_fix(gnss.has_fix)
        if self._storage_full or self.paused:
            self._frame_no += 1  # the timeline goes on; the gap is logged
            return
        wall = self.clock.wall() - (self.clock.monotonic() - frame.captured)
        text = watermark_text(
            wall,
            self.clock.utc_offset(),
            self.clock.synced(),
            gnss,
            frame.captured,
            self.badges,
            self.device_id,
            self.config.watermark.labels,
            place=f"{self.config.watermark.labels.room} {self.room_id or '-'}"
            if self.room
            else None,
        )
        images = self._pictures(frames, faults, text)
        try:
            seg = self._segment or self._begin_segment(frame.captured, wall)
            audio = self._silence if samples is None else samples
            for track, writer in seg.writers.items():
                writer.add(images[track], audio)
            self._clear("write_error")
            self._clear("encoder")
        except OSError as e:
            self._write_failed(e)
            return
        except av.FFmpegError as e:  # the encoder failed: a fresh one starts next frame
            lost = self._abandon_segment()
            self._fault("encoder", ["video", "audio"], str(e), since=lost)
            self._frame_no += 1
            return
        seg.audio_ok &= samples is not None
        self._note_position(seg, gnss, frame.captured)
        self._frame_no += 1
        if seg.frames >= self._segment_frames:
            try:
                self._end_segment()
            except OSError as e:
                self._write_failed(e)

    def _pictures(
        self, frames: dict[str, VideoFrame], faults: dict[str, str], text: str
    ) -> dict[str, np.ndarray]:
        """Each track's watermarked picture: the cameras', and the composite if any."""
        images = {name: f.image for name, f in frames.items()}
        room = self.config.room
        if room and room.pip:
            pip = room.pip
            images[pip.track] = compose_pip(
                images[pip.main],
                images[pip.inset],
                pip.divisor,
                pip.corner,
                top=self.watermarks[pip.track].strip_height,
            )
            faults[pip.track] = faults.get(pip.main) or faults.get(pip.inset) or ""
        for track, image in images.items():
            self.watermarks[track].apply(image, text + faults.get(track, ""))
        self.pictures = images
        return images

    def pause(self, reason: str = "") -> None:
        """The officer stops recording while the session stays open: an interruption
        (``officer_stop``) until :meth:`resume`, explained like any other."""
        if self.session is None:
            raise SessionError("no session is open: nothing to pause")
        self.paused = True
        if self._segment:
            self._end_segment()
        self._fault("officer_stop", ["video", "audio"], reason)

    def resume(self) -> None:
        self.paused = False
        self._clear("officer_stop")

    def _note_fix(self, has_fix: bool) -> None:
        """Losing the GNSS fix is an event, not a gap: the footage goes on."""
        if self._had_fix is not None and has_fix != self._had_fix and self.session:
            kind = "gnss_regained" if has_fix else "gnss_lost"
            self._seal("event", {"type": kind}, self.session.id)
        self._had_fix = has_fix

    def explain(self) -> bool:
        """The explain control: the oldest gap awaiting a spoken explanation gets one,
        starting now (button mode)."""
        return self.gaps.explain_pressed(self._moment())

    # -- continuity ----------------------------------------------------------------

    def _fault(
        self,
        cause: str,
        affects: list[str],
        detail: str = "",
        since: Moment | None = None,
        tracks: tuple[str, ...] = (),
    ) -> None:
        """A fault is present; ``since``: when footage stopped being kept, if earlier;
        ``tracks``: the tracks it interrupts (none named: all of them)."""
        where = f"{cause} ({', '.join(tracks)})" if tracks else cause
        self._error(f"{where}: {detail}" if detail else where)
        self.faults.add(fault_key(cause, tracks))
        if self.session is None:
            return  # outside a session nothing is owed; a fault still present at open counts
        started = self.gaps.fault(cause, since or self._moment(), affects, detail, tracks)
        if started:
            self._seal_interruption(started)

    def _clear(self, cause: str, tracks: tuple[str, ...] = ()) -> None:
        self.faults.discard(fault_key(cause, tracks))
        if fault_key(cause, tracks) not in self.gaps.active:
            return
        ended = self.gaps.clear(cause, self._moment(), tracks)
        if ended and self.session:
            self._seal(
                "interruption_end", {"id": ended.id, "end": ended.end.as_dict()}, self.session.id
            )

    def _seal_interruption(self, s: Started, end: Moment | None = None) -> None:
        assert self.session
        body = {
            "id": s.id,
            "cause": s.cause,
            "affects": s.affects,
            "start": s.start.as_dict(),
            "end": end.as_dict() if end else None,
            "detail": s.detail,
        }
        if s.tracks:
            body["tracks"] = list(s.tracks)
        self._seal("interruption", body, self.session.id)

    def _seal_explanation(self, gap: str, start: Moment, end: Moment) -> None:
        if self.session is None:
            return
        body = {
            "interruption": gap,
            "kind": "voice",
            "clip": {"start": start.as_dict(), "end": end.as_dict()},
        }
        self._seal("explanation", body, self.session.id)

    def _write_failed(self, e: OSError) -> None:
        cause = "storage_full" if e.errno == errno.ENOSPC else "write_error"
        lost = self._abandon_segment()
        self._fault(cause, ["video", "audio"], e.strerror or str(e), since=lost)
        self._frame_no += 1

    def _abandon_segment(self) -> Moment | None:
        """Give up the segment being written; returns when its footage began (the gap
        starts there: what it held is not sealed)."""
        seg, self._segment = self._segment, None
        if seg is None:
            return None
        for writer in seg.writers.values():
            writer.abandon()
            self._discard(writer.path)
        return seg.start

    def _check_clock(self) -> None:
        offset = self.clock.wall() - self.clock.monotonic()
        previous, self._wall_offset = self._wall_offset, offset
        if previous is None or abs(offset - previous) <= self.config.continuity.clock_jump_seconds:
            return
        jump = offset - previous
        self._error(f"wall clock jumped {jump:+.1f} s")
        if self.session:
            at = self._moment()
            started = Started(str(uuid.uuid4()), "clock_jump", at, ["time"], f"{jump:+.3f} s")
            self._seal_interruption(started, end=at)
            self.gaps.resumed_after(started, at)

    def _check_power(self) -> None:
        battery = self.hw.battery
        if battery is None or battery.external_power():
            return
        if battery.percent() <= self.config.power.critical_percent:
            self._error("battery critical: shutting down")
            if self.session:
                self._fault("battery", ["video", "audio", "location"], "battery critical")
            self.stop(reason="battery", close_session=False)

    def _check_storage(self) -> None:
        storage = self.hw.storage
        if storage is None:
            return
        usage = storage.usage()
        limits = self.config.storage
        if usage.fraction_used >= limits.warn_fraction and not self._storage_warned:
            self._storage_warned = True
            self._seal("event", {"type": "storage_warning", "used": round(usage.fraction_used, 3)})
        degrade = (
            limits.degrade_fraction is not None and usage.fraction_used >= limits.degrade_fraction
        )
        if degrade != self._degraded:
            self._degraded = degrade
            kind = "storage_degraded" if degrade else "storage_restored"
            self._seal(
                "event",
                {"type": kind, "used": round(usage.fraction_used, 3)},
                self.session.id if self.session else None,
            )
        self._storage_full = usage.free < limits.min_free_bytes
        if self._storage_full:
            self._fault("storage_full", ["video", "audio"], f"{usage.free} bytes free")
            if self._segment:
                try:
                    self._end_segment()  # seal what was written before the disk filled
                except OSError as e:
                    self._write_failed(e)
        else:
            self._clear("storage_full")

    # -- power-cut recovery ----------------------------------------------------------

    def _recover(self) -> None:
        """At boot: if the last boot ended inside a session, keep and seal what reached the
        disk, log the gap, and resume recording in the same session."""
        opened = self._session_left_open()
        if opened is None:
            self._clean_spool()
            return
        sid = str(opened.session)
        body = opened.body
        sealed = [e for e in self.journal.entries("segment") if e.session == sid]
        counts: dict[str, int] = {}
        for e in sealed:
            track = str(e.body.get("track", MAIN_TRACK))
            counts[track] = counts.get(track, 0) + 1
        self.session = _Session(
            sid,
            Category(body.get("category", self.config.session.category)),
            list(body.get("badges", [])),
            Moment(**opened.payload["at"]),
            next_index=counts,
        )
        if self.room:
            self.room.opened(body.get("trigger", "command"))
        last_end = max((float(e.body["end"]["wall"]) for e in sealed), default=None)
        for path in sorted((self.root / SPOOL).glob("*.mp4")):
            info = read_sidecar(path)
            if info is None or info.get("session") != sid:
                self._discard(path)
                continue
            end = self._seal_recovered(path, info)
            if end is not None:
                last_end = max(last_end or end, end)
        self._clean_spool()
        now = self._moment()
        open_gap = self._open_interruption(sid)
        if open_gap is not None:
            # sealed before a clean shutdown inside the session (battery): it ends now
            self._seal("interruption_end", {"id": open_gap, "end": now.as_dict()}, sid)
            self.gaps.pending.append(_Pending(open_gap, now, now if self._auto() else None))
        else:
            # The gap starts where the footage on record ends (none: at the last entry).
            start_wall = last_end
            if start_wall is None:
                last = self._last_before_boot
                start_wall = float((last or opened).payload["at"]["wall"])
            started = Started(
                str(uuid.uuid4()),
                "power_loss",
                Moment(start_wall, now.mono, False),
                ["video", "audio", "location"],
                "found at boot: the device lost power inside the session",
            )
            self._seal_interruption(started, end=now)
            self.gaps.resumed_after(started, now)
        self.machine.state = State.RECORDING
        self.led = "on"

    def _auto(self) -> bool:
        return self.config.continuity.explain_mode == "auto"

    def _seal_recovered(self, path: Path, info: dict[str, Any]) -> float | None:
        """Seal a spooled segment cut by the power loss; returns its end (wall)."""
        if truncate_to_fragments(path) == 0:
            self._discard(path)
            return None
        facts = probe(path)
        if facts.video_frames == 0 or facts.decode_error:
            self._discard(path)
            return None
        fps = self.config.recording.fps
        start = Moment(**info["start"])
        end = Moment(
            start.wall + facts.video_frames / fps,
            start.mono + facts.video_frames / fps,
            start.synced,
        )
        written = WrittenSegment(
            path,
            int(info["first_frame"]),
            facts.video_frames,
            facts.audio_samples,
            facts.size,
            facts.sha256,
            int(info.get("bitrate", self.config.recording.video_bitrate)),
        )
        location = {"fix": "unknown", "start": None, "end": None, "max_fix_age": None}
        track = str(info.get("track", MAIN_TRACK))
        if track not in self.tracks:
            self._discard(path)
            return None
        self._seal_segment(
            written, start, end, location, facts.audio_samples > 0, track, recovered=True
        )
        return end.wall

    def _open_interruption(self, sid: str) -> str | None:
        """An interruption of this session sealed without an end and never ended."""
        ended = {str(e.body["id"]) for e in self.journal.entries("interruption_end")}
        for e in self.journal.entries("interruption"):
            if e.session == sid and e.body.get("end") is None and str(e.body["id"]) not in ended:
                return str(e.body["id"])
        return None

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

    def _act(
        self,
        actions: list[Action],
        category: Category | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        for a in actions:
            if a == Action.OPEN:
                self._open(category or self.config.session.category, extra)
            elif a == Action.CLOSE:
                self._close(extra)
            elif a == Action.ARM_CLOSE:
                self.led = "blink"
            elif a == Action.DISARM_CLOSE:
                self.led = "on"

    def _open(self, category: Category, extra: dict[str, Any] | None = None) -> None:
        at = self._moment()
        sid = str(uuid.uuid4())
        body: dict[str, Any] = {
            "category": category.value,
            "badges": self.badges,
            "prebuffer_seconds": self.config.recording.prebuffer_seconds,
            "tracks": self.tracks,
        }
        if self.room:
            body["room"] = self.room_id
        self._seal("session_open", {**body, **(extra or {})}, sid)
        self.session = _Session(sid, category, list(self.badges), at)
        self.paused = False
        # Pre-event footage becomes the session's first segments, so arrival is on record.
        window = self.config.recording.prebuffer_seconds
        for b in self._buffer:
            for track, written in b.written.items():
                if b.end.mono > at.mono - window:
                    self._seal_segment(written, b.start, b.end, b.location, b.audio_ok, track)
                else:
                    self._discard(written.path)
        self._buffer.clear()
        if self._segment is None:
            # From idle (no buffer): start now, and fast, so the trigger is on record.
            self._begin_segment(at.mono, at.wall)
        else:
            self._write_sidecar(self._segment)  # the open segment now belongs to the session
        self.led = "on"

    def _close(self, extra: dict[str, Any] | None = None) -> None:
        assert self.session
        if self._segment and self._segment.frames:
            self._end_segment()
        for ex in self.gaps.session_closing(self._moment()):
            self._seal_explanation(ex.id, ex.start, ex.end)
        counts = self.session.next_index
        self._seal(
            "session_close",
            {
                "segments": sum(counts.values()),
                "tracks": {t: counts.get(t, 0) for t in self.tracks},
                **(extra or {}),
            },
            self.session.id,
        )
        self.session = None
        if self.room:
            self.room.closed()
        self.machine.closed()
        self.led = "off"

    def _begin_segment(self, mono: float, wall: float) -> _Segment:
        rec = self.config.recording
        if self._degraded:  # stretch the space left rather than stop recording
            rec = rec.model_copy(update={"video_bitrate": self.config.storage.degrade_bitrate})
        writers: dict[str, SegmentWriter] = {}
        try:
            for track in self.tracks:
                path = self.root / SPOOL / f"{self._frame_no:012d}-{track}.mp4"
                writers[track] = SegmentWriter(path, rec, first_frame=self._frame_no)
        except BaseException:
            for w in writers.values():
                w.abandon()
                self._discard(w.path)
            raise
        self._segment = _Segment(writers, Moment(wall, mono, self.clock.synced()))
        self._write_sidecar(self._segment)
        return self._segment

    def _write_sidecar(self, seg: _Segment) -> None:
        for track, writer in seg.writers.items():
            write_sidecar(
                writer.path,
                {
                    "track": track,
                    "first_frame": writer.first_frame,
                    "bitrate": writer.bitrate,
                    "start": seg.start.as_dict(),
                    "session": self.session.id if self.session else None,
                },
            )

    def _discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)

    def _end_segment(self) -> None:
        seg = self._segment
        assert seg
        self._segment = None
        written = {track: w.close() for track, w in seg.writers.items()}
        frames = next(iter(written.values())).frames
        fps = self.config.recording.fps
        end = Moment(
            seg.start.wall + frames / fps,
            seg.start.mono + frames / fps,
            self.clock.synced(),
        )
        location = _location_summary(seg)
        if self.session:
            for track, w in written.items():
                self._seal_segment(w, seg.start, end, location, seg.audio_ok, track)
            return
        self._buffer.append(_Buffered(written, seg.start, end, location, seg.audio_ok))
        window = self.config.recording.prebuffer_seconds
        while self._buffer and self._buffer[0].end.mono <= end.mono - window:
            for w in self._buffer.popleft().written.values():
                self._discard(w.path)

    def _seal_segment(
        self,
        w: WrittenSegment,
        start: Moment,
        end: Moment,
        location: dict[str, Any],
        audio_ok: bool,
        track: str = MAIN_TRACK,
        recovered: bool = False,
    ) -> None:
        s = self.session
        assert s
        index = s.next_index.get(track, 0)
        rel = segment_name(s.id, index, track)
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(w.path, dest)
        fsync_dir(dest.parent)
        sidecar(w.path).unlink(missing_ok=True)
        rec = self.config.recording
        before_open = max(0.0, s.opened.mono - start.mono)
        body = {
            "track": track,
            "index": index,
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
                    "bitrate": w.bitrate,
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
            "badges": list(self.badges),  # as burned into the picture now
        }
        if recovered:  # cut by a power loss and sealed at the next boot
            body["recovered"] = True
        s.next_index[track] = index + 1
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
            self._discard(p)

    def _session_left_open(self) -> Entry | None:
        """The session_open entry of a session the last boot left open (power cut or
        battery shutdown), if any."""
        rows = list(
            self.journal.db.query(
                "select kind, entry from entries where kind in ('session_open', 'session_close')"
                " order by seq desc limit 1"
            )
        )
        if rows and rows[0]["kind"] == "session_open":
            return Entry.from_json(rows[0]["entry"].encode())
        return None

    @property
    def indicator(self) -> str:
        """What the recording LED shows: off, on, blink (close armed), prompt (explain),
        deadline (not recording, and a recording nears or passed its 24 hours unsynced)."""
        if self.session and self.gaps.prompting and self.led == "on":
            return "prompt"
        if self.session is None and self.sync_deadline in ("warn", "urgent", "overdue"):
            return "deadline"
        return self.led

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
            "interrupted": sorted(self.gaps.active),
            "tracks": self.tracks,
            "room": self.room_id if self.room else None,
            "panel": self.panel_state if self.room else None,
            "explain_prompt": self.gaps.prompting,
            "unexplained": list(self.gaps.unexplained),
        }


class RecorderBusy(RuntimeError):
    """Another process (a recorder, or an agent command) is writing this device's chain."""


def _hold_lock(root: Path) -> int:
    (root / PRIVATE).mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / PRIVATE / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RecorderBusy(f"{root} is in use by another agent process") from None
    return fd


def _fed_by(config: DeviceConfig, camera: str) -> tuple[str, ...]:
    """The tracks a camera feeds: itself, and the composite it is part of. A body
    recorder's one camera feeds everything: its interruptions name no track."""
    room = config.room
    if room is None:
        return ()
    if room.pip and camera in (room.pip.main, room.pip.inset):
        return (camera, room.pip.track)
    return (camera,)


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

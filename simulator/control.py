"""A tester's control channel into a running ``unbroken agent run --sim`` process.

``unbroken agent run --sim --control PATH`` listens on a Unix socket at PATH (mode 0600).
A client sends one JSON object per line and reads one JSON object per line back, in order:

    → {"cmd": "press"}
    ← {"ok": true, "cmd": "press", "status": {"state": "recording", "session": "…", …}}
    → {"cmd": "camera", "track": "main", "ok": false}
    ← {"ok": true, "cmd": "camera", "status": {…, "interrupted": ["camera"]}}
    → {"cmd": "jump"}
    ← {"ok": false, "error": "unknown command 'jump'; one of: press, hold, …"}

Every command is carried out on the recording thread (``Recorder.post``), between two
frames, exactly like a button press; the reply comes once it has been, with the device's
status once it took effect: a fault the device notices at its next frame (a camera, the
microphone, the GNSS fix, a clock step) or at its once-a-second check (the disk, the
battery) is in the status of the reply (:func:`settle_frames`). Only ``network`` runs
on the channel's thread (it opens or closes the uploader's MQTT connection, which the
recording thread never touches). A malformed command, or one the device refuses (a
marker with no session open), gets ``{"ok": false, "error": …}`` and recording goes on
untouched.

The commands (:mod:`simulator.control_commands`, and docs/testers-guide.md):

``press``, ``hold``                 the record button (a press opens or arms the close; a hold
                                    of ``hold_seconds`` closes)
``close``                           press and confirm: the deliberate close
``marker`` [type, note]             the marker button (no type) or a typed marker (R2)
``open`` [category, badges]         open a session by the API
``explain``                         the explain control (``explain_mode = "button"``)
``pause`` [reason], ``resume``      the officer stops recording inside the session
``camera`` track?, ok               a camera fails (``ok: false``) or recovers
``microphone`` ok                   the microphone fails or recovers
``gps`` ok                          the GNSS fix is lost (the last fix is kept) or back
``walk`` route, loop?               start replaying an NMEA route now
``battery`` percent?, drain_per_hour?, external?
``storage`` free_bytes              the disk has this many bytes free (shrinking as the device
                                    writes); ``null``: the volume as it was
``clock_jump`` seconds              the wall clock steps (monotonic time does not)
``network`` up                      the uploader's MQTT connection drops (the broker sends the
                                    device's will: the store sees it offline) or comes back
``panel`` door | key                what the room panel would say (``door``: open/closed,
                                    ``key``: start/stop), without the broker
``status``                          the recorder's status, the simulated hardware and the backlog

Here: what carrying a command out means (:class:`SimParts`). The socket and the client:
:mod:`simulator.control_channel`.

Example::

    with ControlClient(Path("/tmp/bwc.sock")) as c:
        c.send({"cmd": "press"})
        c.send({"cmd": "battery", "percent": 10, "drain_per_hour": 3600})
        print(c.send({"cmd": "status"})["status"]["sim"]["battery"])
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.session import State
from common import mqtt
from device.camera import SimCamera
from device.clock import JumpingClock
from device.controls import MARKER_PRESS, RECORD_HOLD, RECORD_PRESS, RECORD_RELEASE
from device.hardware import SimHardware
from simulator.control_commands import (
    BatteryCmd,
    CameraCmd,
    ClockJump,
    CloseCmd,
    ControlCommand,
    ControlError,
    Explain,
    GpsCmd,
    Hold,
    Marker,
    MicrophoneCmd,
    NetworkCmd,
    OpenCmd,
    PanelCmd,
    Pause,
    Press,
    Resume,
    StorageCmd,
    Walk,
)

if TYPE_CHECKING:
    from agent.recorder import Recorder
    from agent.sync import Uploader

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 5.0  # seconds the recording thread has to carry a command out


# -- the uploader's link a tester can cut ---------------------------------------------------


class NetworkSwitch:
    """The uploader's link. Down: its MQTT connection is closed with the will (the broker
    tells the store the device went offline, as after a real drop) and not reopened until
    up; the uploader keeps its journal-backed state and resumes where the store says."""

    def __init__(self, uploader: Uploader, up: bool = True) -> None:
        self.uploader = uploader
        self.up = up
        self._lock = threading.Lock()

    def start(self) -> None:
        """The uploader runs either way (offline, it still keeps the 24-hour count)."""
        with self._lock:
            self.uploader.start(connect=self.up)

    def set(self, up: bool) -> None:
        with self._lock:
            if up == self.up:
                return
            self.up = up
            if up:
                self.uploader.connect()
            else:
                mqtt.drop(self.uploader.client)

    def state(self) -> dict[str, Any]:
        return {"up": self.up, "connected": self.uploader.connected.is_set()}


# -- carrying commands out --------------------------------------------------------------------


@dataclass
class Pending:
    """A command handed to the recording thread; ``reply`` once it was carried out, its
    status final once :attr:`settled` (the device noticed what the command did)."""

    cmd: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] = field(default_factory=dict)
    # the recorder's monotonic time from which its status shows the effect (None: now)
    settle_until: float | None = None

    def finish(self, reply: dict[str, Any]) -> None:
        self.reply = {"cmd": self.cmd, **reply}
        self.done.set()

    @property
    def settled(self) -> bool:
        return self.done.is_set() and self.settle_until is None


def settle_frames(cmd: ControlCommand, fps: int) -> int:
    """How many frames after ``cmd`` was carried out the device has noticed it: a camera,
    microphone or GNSS fault, a route or a clock step at the next frame it records; the
    disk and the battery at its once-a-second check; everything else at once."""
    if isinstance(cmd, StorageCmd | BatteryCmd):
        return fps + 1
    if isinstance(cmd, CameraCmd | MicrophoneCmd | GpsCmd | Walk | ClockJump):
        return 1
    return 0


@dataclass
class SimParts:
    """The recorder, the simulated hardware under it (built with its fault switches by
    :class:`~device.hardware.SimFactory`) and the uploader's link, as a tester reaches them."""

    recorder: Recorder
    hardware: SimHardware
    clock: JumpingClock
    network: NetworkSwitch | None = None

    # -- on the caller's thread ----------------------------------------------------------

    def submit(self, cmd: ControlCommand) -> Pending:
        """Hand ``cmd`` to the recording thread (or, for ``network``, do it now); the
        returned Pending completes once it was carried out."""
        pending = Pending(cmd.cmd)
        rec = self.recorder
        if rec.powered_off:
            pending.finish({"ok": False, "error": "the device is off"})
            return pending
        if isinstance(cmd, NetworkCmd):
            try:
                if self.network is None:
                    raise ControlError("this device does not sync: no network to switch")
                self.network.set(cmd.up)
            except ControlError as e:
                pending.finish({"ok": False, "error": str(e)})
                return pending
            rec.post(lambda: self._reply(pending, {}))
            return pending
        # Button events are queued as a button would queue them; the reply follows them.
        # (A room controller has no record button: there ``close`` is the API's close.)
        for event in [] if rec.room is not None else _button_events(cmd):
            rec.post(event)
        if isinstance(cmd, PanelCmd) and rec.room is not None:
            what, value = ("door", cmd.door) if cmd.door else ("key", cmd.key)
            rec.room_input(what, str(value).encode())  # as if from the panel, over MQTT
        rec.post(lambda: self._carry_out(cmd, pending))
        return pending

    def run(self, cmd: ControlCommand, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        """Submit and wait for the reply, its status once the command took effect (the
        channel's threads)."""
        deadline = time.monotonic() + timeout
        pending = self.submit(cmd)
        if not pending.done.wait(timeout):
            state = "off" if self.recorder.powered_off else "not answering"
            return {"ok": False, "cmd": cmd.cmd, "error": f"the device is {state}"}
        self.settle(pending, deadline)
        return pending.reply

    def settle(self, pending: Pending, deadline: float) -> None:
        """Wait (until ``deadline``) for the frames after which the device has noticed
        what ``pending`` did, asking the recording thread once a frame; past the deadline
        the reply keeps the status it was carried out with."""
        rec = self.recorder
        pause = 0.5 / rec.config.recording.fps  # so that the next probe meets the next frame
        while not pending.settled and not rec.powered_off:
            probe = Pending("probe")
            rec.post(functools.partial(self._probe, pending, probe))
            if not probe.done.wait(max(0.0, deadline - time.monotonic())):
                return
            if probe.reply["settled"] or time.monotonic() + pause >= deadline:
                return
            time.sleep(pause)

    # -- on the recording thread -----------------------------------------------------------

    def _probe(self, pending: Pending, probe: Pending) -> None:
        probe.finish({"settled": self.took_effect(pending)})

    def took_effect(self, pending: Pending) -> bool:
        """Whether the device has noticed what ``pending`` did by now (its frames since);
        the first time it has, the reply's status becomes the current one."""
        if pending.settle_until is None:
            return True
        rec = self.recorder
        idle = rec.machine.state is State.IDLE  # no frames: nothing more will be noticed
        if not (rec.powered_off or idle or rec.clock.monotonic() >= pending.settle_until):
            return False
        pending.settle_until = None
        if not rec.powered_off:  # (a battery set critical shut it down: keep the last)
            with contextlib.suppress(Exception):
                pending.reply["status"] = self.status()
        return True

    def _carry_out(self, cmd: ControlCommand, pending: Pending) -> None:
        try:
            extra = self.apply(cmd) or {}
        except Exception as e:  # never disturb recording: the tester gets the reason
            pending.finish({"ok": False, "error": _reason(e), "status": self.status()})
            return
        rec, until = self.recorder, None
        if frames := settle_frames(cmd, fps := rec.config.recording.fps):
            # half a frame short: float sums of frame intervals may fall a hair short
            until = rec.clock.monotonic() + (frames - 0.5) / fps
        self._reply(pending, extra, until)

    def _reply(
        self, pending: Pending, extra: dict[str, Any], settle_until: float | None = None
    ) -> None:
        try:
            status = self.status()
        except Exception as e:
            pending.finish({"ok": False, "error": _reason(e)})
            return
        pending.settle_until = settle_until
        pending.finish({"ok": True, **extra, "status": status})

    def apply(self, cmd: ControlCommand) -> dict[str, Any] | None:
        """Carry out one command on the recording thread; raises to refuse it."""
        rec = self.recorder
        if rec.room is not None and (
            isinstance(cmd, Press | Hold | CloseCmd) or (isinstance(cmd, Marker) and not cmd.type)
        ):
            if not isinstance(cmd, CloseCmd):
                raise ControlError(
                    "a room controller has no buttons: use open, close or a typed marker"
                )
            if rec.session is None:
                raise ControlError("no session is open")
            rec.close_session()
            return None
        if isinstance(cmd, Press | Hold | CloseCmd) or (isinstance(cmd, Marker) and not cmd.type):
            return None  # queued as button events; they ran just before this
        if isinstance(cmd, Marker):
            assert cmd.type is not None
            return {"seq": rec.mark(cmd.type, cmd.note).seq}
        if isinstance(cmd, OpenCmd):
            if rec.session is not None:
                raise ControlError(f"session {rec.session.id} is already open")
            return {"session": rec.open_session(cmd.category, cmd.badges)}
        if isinstance(cmd, Explain):
            if not rec.explain():
                raise ControlError("no gap is waiting for an explanation")
        elif isinstance(cmd, Pause):
            rec.pause(cmd.reason)
        elif isinstance(cmd, Resume):
            if not rec.paused:
                raise ControlError("recording is not paused")
            rec.resume()
        elif isinstance(cmd, CameraCmd):
            for cam in self._cameras(cmd.track):
                cam.fail(not cmd.ok)
        elif isinstance(cmd, MicrophoneCmd):
            self.hardware.microphone.fail(not cmd.ok)
        elif isinstance(cmd, GpsCmd):
            self.hardware.gnss.lose(not cmd.ok)
        elif isinstance(cmd, Walk):
            route = Path(cmd.route)
            if not route.is_file():
                raise ControlError(f"route {route}: no such file")
            self.hardware.gnss.walk(route, loop=cmd.loop)
        elif isinstance(cmd, BatteryCmd):
            self.hardware.battery.set(cmd.percent, cmd.external, cmd.drain_per_hour)
        elif isinstance(cmd, StorageCmd):
            self.hardware.storage.fill(cmd.free_bytes)
        elif isinstance(cmd, ClockJump):
            self.clock.jump_wall(cmd.seconds)
        elif isinstance(cmd, PanelCmd) and rec.room is None:
            raise ControlError("this device serves no room: no panel")
        return None  # (a room's panel input was queued just before this)

    def _cameras(self, track: str | None) -> list[SimCamera]:
        cameras = self.hardware.cameras
        if track is None:
            return list(cameras.values())
        if track not in cameras:
            raise ControlError(f"no camera {track!r}; cameras: {', '.join(cameras)}")
        return [cameras[track]]

    def status(self) -> dict[str, Any]:
        """The recorder's status and the simulated hardware's (on the recording thread)."""
        rec, hw = self.recorder, self.hardware
        usage = hw.storage.usage()
        gnss = hw.gnss.state()
        return {
            **rec.status(),
            "indicator": rec.indicator,
            "deadline": rec.sync_deadline,
            "powered_off": rec.powered_off,
            "paused": rec.paused,
            "sim": {
                "wall": rec.clock.wall(),
                "battery": round(hw.battery.percent(), 3),
                "drain_per_hour": hw.battery.drain_per_hour,
                "external_power": hw.battery.external_power(),
                "storage_free": usage.free,
                "storage_filled": hw.storage.filled,
                "gps_fix": gnss.has_fix,
                "gps_lost": hw.gnss.lost,
                "cameras_failed": sorted(n for n, c in hw.cameras.items() if c.failed),
                "network": self.network.state() if self.network else None,
            },
        }


def _button_events(cmd: ControlCommand) -> list[str]:
    # As the buttons report them: down (a session opens on this edge), held, up.
    if isinstance(cmd, Press):
        return [RECORD_PRESS, RECORD_RELEASE]
    if isinstance(cmd, Hold):
        return [RECORD_PRESS, RECORD_HOLD, RECORD_RELEASE]
    if isinstance(cmd, CloseCmd):  # press, then confirm within the window
        return [RECORD_PRESS, RECORD_RELEASE, RECORD_PRESS, RECORD_RELEASE]
    if isinstance(cmd, Marker) and cmd.type is None:
        return [MARKER_PRESS]
    return []


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, ControlError) else f"{type(e).__name__}: {text}"

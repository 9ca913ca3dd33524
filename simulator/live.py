"""A simulated recorder running in real time for the panel (:mod:`simulator.web`): its
own thread steps the frames; the page reads a snapshot and acts through the mock pins or
the control channel's commands (:class:`~simulator.control.SimParts`), and a tester can
cut its power and switch it on again.

What a tester's button stands for is in :mod:`simulator.tester_buttons`; the JPEG previews
in :mod:`simulator.previews`.

Example::

    live = LiveDevice(SimDevice(root, config, realtime=True))
    live.start()
    live.act("record")                                   # the record button's mock pin
    live.act("clock-jump", {"seconds": -3600})           # the control channel's clock_jump
    live.act("power-cut"); live.act("power-on")          # a power_loss gap, then on again
    live.stop(); live.close()
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from agent.run import take_commands
from agent.sync import Uploader
from device.clock import SimClock
from simulator.control import NetworkSwitch, SimParts
from simulator.control_commands import ControlCommand
from simulator.device import SimDevice
from simulator.journal_view import JournalView
from simulator.previews import PREVIEW_WIDTH, JpegPreviews
from simulator.tester_buttons import ActionError, button_command

log = logging.getLogger(__name__)

EVENTS_SHOWN = 12  # chain entries per device in /api/fleet


class LiveDevice:
    """One simulated recorder in real time, on its own thread.

    Only that thread touches the recorder; everything else reads :attr:`snapshot` (a dict
    replaced whole after every frame), the mock pins, the last picture, or the journal
    through its own database connection, and acts through the mock pins or the control
    channel's commands (:class:`~simulator.control.SimParts`, carried out between frames).

    A power cut stops the frames at once and leaves the disk as it was at that moment
    (:meth:`power_cut`); power on (:meth:`power_on`) boots a new recorder on it, which
    seals the lost stretch as a ``power_loss`` gap. ``uploader_for(root, clock)`` gives
    the new boot its uploader (with sync)."""

    kind = "body"
    events_shown = EVENTS_SHOWN

    def __init__(
        self,
        dev: SimDevice,
        uploader: Uploader | None = None,
        uploader_for: Callable[[Path, SimClock], Uploader] | None = None,
    ) -> None:
        self.id = dev.recorder.device_id
        self.root = dev.recorder.root
        self.snapshot: dict[str, Any] = {}
        self.error: str | None = None
        self._uploader_for = uploader_for
        self.journal = JournalView(self.root)
        self._press_lock = threading.Lock()  # two presses at once would merge into one
        self.previews = JpegPreviews()
        self._off_at: float | None = None  # time.monotonic() when it last went off
        self._cut = False  # the last power-off was a cut
        self._attach(dev, uploader)

    def _attach(self, dev: SimDevice, uploader: Uploader | None) -> None:
        """A boot: this recorder, its uploader and a thread to step it."""
        self.dev = dev
        self.uploader = uploader
        dev.uploader = uploader  # the frame loop hands it the deadline and panel state
        self.gps = dev.gnss
        self.network = NetworkSwitch(uploader) if uploader is not None else None
        self.parts = SimParts(dev.recorder, dev.hardware, dev.clock, self.network)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.id}", daemon=True)
        self._storage: dict[str, Any] = {}
        self._frames = 0
        self._fps = 0.0
        self._rate_at = (0.0, 0)  # when, and at which frame, the rate was last measured

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.dev.start()
        self.journal.open()  # its own connection; the journal exists now
        self._take_snapshot(storage=True)
        if self.uploader is not None and self.network is not None:
            self.uploader.status_source = lambda: dict(self.snapshot.get("status", {}))
            take_commands(self.uploader, self.dev.recorder)
            self.network.start()
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop stepping; the recorder closes an open session and shuts down cleanly."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        else:  # never ran
            self.dev.stop()

    def close(self) -> None:
        if self.uploader is not None:
            self.uploader.stop()
        self.journal.close()

    def _run(self) -> None:
        # Fallen behind (a busy machine), the loop does not race to catch up.
        loop = self.dev.frame_loop(max_lag=1.0, on_frame=self._after_frame, stop=self._stop)
        self._rate_at = (time.monotonic(), 0)
        try:
            loop.run()
        except Exception as e:  # a crash of the simulation, not of the page: show it
            log.exception("device %s stopped", self.id)
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self._off_at = time.monotonic()
            if not self._cut:  # a cut leaves the recorder as it was: power_cut takes over
                self.dev.stop()  # closes an open session; after a battery shutdown, the pins
                self._take_snapshot(storage=True)

    def _after_frame(self, n: int) -> None:
        """On the device thread, after frame ``n``: the snapshot, and the frame rate."""
        self._frames = n
        self._take_snapshot(storage=n % self.dev.config.recording.fps == 0)
        now = time.monotonic()
        since, at_frame = self._rate_at
        if now - since >= 2.0:
            self._fps = (n - at_frame) / (now - since)
            self._rate_at = (now, n)

    # -- power -----------------------------------------------------------------------

    def power_cut(self) -> None:
        """The battery pulled: no frame after this one, nothing flushed or closed. The
        link drops with the power (the broker sends the device's will); the disk keeps
        what it held at that moment, as after the SIGKILL a scenario's power cut is."""
        if self.dev.recorder.powered_off:
            raise ActionError(f"{self.id} is off already", HTTPStatus.CONFLICT)
        self._cut = True
        self._stop.set()
        self._thread.join(timeout=30)
        if self.network is not None:
            self.network.set(False)
        if self.uploader is not None:
            self.uploader.stop()
        self.journal.close()
        self.dev.controls.show("off")  # the LED goes dark with the power
        disk_as_cut(self.root, self.dev.stop)
        self.journal.open()
        # What the page shows stays as the cut left it (the session open on the disk), off.
        self.snapshot = {**self.snapshot, "powered_off": True, "indicator": "off"}

    def power_on(self) -> None:
        """Boot again after a power cut or a battery shutdown, on the same disk; the
        device's clock went on while it was off."""
        if not self.dev.recorder.powered_off:
            raise ActionError(f"{self.id} is on already", HTTPStatus.CONFLICT)
        self._stop.set()
        self._thread.join(timeout=30)
        if self.uploader is not None:
            self.uploader.stop()
        self.journal.close()
        off_for = time.monotonic() - (self._off_at or time.monotonic())
        clock = SimClock(wall_start=self.dev.clock.wall() + off_for)
        dev = SimDevice(self.root, self.dev.config, clock=clock, realtime=True)
        has_sync = self.uploader is not None and self._uploader_for is not None
        uploader = self._uploader_for(self.root, clock) if has_sync else None  # type: ignore[misc]
        self._cut = False
        self._attach(dev, uploader)
        self.start()

    # -- what the tester does --------------------------------------------------------

    def act(self, action: str, args: Mapping[str, Any] | None = None) -> None:
        """Do what a button on the page does; ``KeyError`` for an action this device does
        not have, :class:`ActionError` for one it cannot take (``args``: the tester's
        figures, see :func:`button_command`)."""
        pins: dict[str, Callable[[], object]] = {
            "record": self.dev.press_record,
            "marker": self.dev.press_marker,
            "power-cut": self.power_cut,
        }
        if action == "power-on":
            with self._press_lock:
                self.power_on()
            return
        cmd = None if action in pins else button_command(action, args or {})
        with self._press_lock:
            if self.dev.recorder.powered_off:
                raise ActionError(f"{self.id} is off: power it on first", HTTPStatus.CONFLICT)
            if cmd is None:
                pins[action]()
            else:
                self.control(cmd)

    def control(self, cmd: ControlCommand) -> dict[str, Any]:
        """Carry ``cmd`` out as the control channel does, between two frames; the reply,
        or :class:`ActionError` with the device's reason for refusing it."""
        reply = self.parts.run(cmd)
        if not reply.get("ok"):
            raise ActionError(f"{cmd.cmd}: {reply.get('error')}", HTTPStatus.CONFLICT)
        return reply

    # -- what the page shows ---------------------------------------------------------

    def _take_snapshot(self, storage: bool = False) -> None:
        """On the device thread (or before it runs): what the page may read at any time."""
        dev, rec = self.dev, self.dev.recorder
        if storage or not self._storage:
            u = dev.storage.usage()
            self._storage = {
                "used": u.total - u.free,
                "total": u.total,
                "fraction": round(u.fraction_used, 6),
                "filled": dev.storage.filled,
            }
        gnss = self.gps.state()
        fix = gnss.last_fix
        now = dev.clock.monotonic()
        age = gnss.age(now)
        self.snapshot = {
            "status": rec.status(),
            "indicator": rec.indicator,
            "powered_off": rec.powered_off,
            "clock": {"wall": dev.clock.wall(), "utc_offset": dev.clock.utc_offset()},
            "frames": self._frames,
            "fps": round(self._fps, 1),
            "battery": {
                "percent": round(dev.battery.percent(), 1),
                "external": dev.battery.external_power(),
            },
            "storage": self._storage,
            "gps": {
                "fix": gnss.has_fix,
                "lat": fix.lat if fix else None,
                "lon": fix.lon if fix else None,
                "satellites": fix.satellites if fix else None,
                "age": None if age is None else round(age, 1),
                "jammed": self.gps.lost,
            },
            **self._more_snapshot(),
        }

    def _more_snapshot(self) -> dict[str, Any]:
        """On the device thread: what a kind of device adds to :attr:`snapshot`."""
        return {}

    def view(self) -> dict[str, Any]:
        """Everything the page shows for this device (any thread)."""
        snap = self.snapshot
        status = snap.get("status", {})
        return {
            "id": self.id,
            "kind": self.kind,
            "state": "off" if snap.get("powered_off") else status.get("state"),
            "session": status.get("session"),
            "close_armed": status.get("close_armed"),
            "badges": status.get("badges", []),
            "led": {"pin": self.dev.led(), "indicator": snap.get("indicator", "off")},
            "last_error": self.error or status.get("last_error"),
            "interrupted": status.get("interrupted", []),
            "explain_prompt": status.get("explain_prompt", False),
            "unexplained": status.get("unexplained", []),
            "explain_mode": self.dev.config.continuity.explain_mode,
            "camera_fault": self.dev.camera.failed,
            "microphone_fault": self.dev.microphone.failed,
            "network": self.network.state() if self.network else None,
            "power_cut": self._cut,
            **{k: snap.get(k) for k in ("clock", "frames", "fps", "battery", "storage", "gps")},
            "sync": self._sync(),
            "events": self.journal.events(self.events_shown),
            "preview": f"/devices/{self.id}/preview.jpg",
        }

    def _sync(self) -> dict[str, Any]:
        up = self.uploader
        counts = self.journal.counts()
        if counts is None:
            return {"enabled": up is not None}
        sealed, total, backlog = counts
        return {
            "enabled": up is not None,
            "connected": bool(up and up.connected.is_set()),
            "deadline": up.deadline_level if up else None,
            "segments_sealed": sealed,
            "segments_receipted": sealed - backlog.blobs,
            "entries": total,
            "entries_unsynced": backlog.entries,
            "backlog": backlog.model_dump(),
            "refusals": list(up.refusals[-3:]) if up else [],
        }

    @property
    def main_track(self) -> str:
        """The track the big preview shows."""
        return self.dev.config.tracks[0]

    def preview_width(self, track: str) -> int:
        return PREVIEW_WIDTH

    def preview_jpeg(self, track: str | None = None) -> bytes:
        """The last watermarked picture of ``track`` (default: :attr:`main_track`) as JPEG;
        ``KeyError`` for a track the device lacks."""
        track = track or self.main_track
        if track not in self.dev.config.tracks:
            raise KeyError(track)
        rec = self.dev.config.recording
        picture = self.dev.recorder.pictures.get(track)
        return self.previews.jpeg(
            track, picture, (rec.height, rec.width), self.preview_width(track)
        )


def disk_as_cut(root: Path, shut_down: Callable[[], object]) -> None:
    """Run ``shut_down`` (it frees what the recorder holds: pins, cameras, the chain's
    lock), then put ``root`` back as it was before it: what a power cut leaves, with
    nothing the shutdown wrote. SQLite rebuilds its shared-memory index from the WAL,
    as after a crash."""
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        disk = Path(tmp) / "disk"
        shutil.copytree(root, disk, ignore=shutil.ignore_patterns("*-shm"))
        shut_down()
        shutil.rmtree(root)
        disk.rename(root)

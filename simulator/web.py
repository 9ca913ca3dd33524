"""``unbroken sim panel``: a page in the browser for a simulated fleet.

Each device is a :class:`~simulator.device.SimDevice` stepping frames in real time on its
own thread. The page shows, for each body recorder, its record, marker and explain
buttons, the recording LED (the gpiozero mock pin, and the pattern the recorder asks for),
battery, storage, network, GPS, clock, state, session and officer, a live preview of the
watermarked picture, the chain's latest entries and the sync backlog. A click on record
drives the record button's mock pin, exactly as the switch would. A tester's buttons flip
the switches the scenarios flip, as the control channel does (:func:`tester_command`):
camera, microphone and GPS faults, storage filled and given back, the network dropped and
back, the clock stepped an hour either way, the battery's level and external power, and a
power cut (the disk stays as the cut left it; power on boots again and seals the
``power_loss`` gap). Each body recorder is worn by an officer: assigned by the agency with
sync, from the settings without (the configured badges, else 340201, 340202, ...).

An interview room (``--rooms``) is a room controller with its room panel (:class:`SimPanel`:
door contact and key switch) and, with sync, the agency's case system (:class:`CaseSystem`:
signed ``session_open``/``session_close`` commands). Its card shows the RECORDING lamp (the
controller's mock pin), the panel's state (``idle``, ``confirm``, ``recording``, ``fault``),
a preview of every track (the picture-in-picture large, the cameras small), a fault
button per camera, the event log and the sync backlog.

With sync (the default when Mosquitto is installed) a :class:`~simulator.site.LocalSite`
runs its broker and a store worker, every device is provisioned (a room controller for its
room) and runs its real uploader, the panel speaks MQTT with its own certificate as the
firmware does, and the backlog shows segments sealed against receipted. Without it,
everything stays unsynced, a room has no room assigned and no case system, and the panel
goes straight to ``recorder.room_input``.

The server is the standard library's: ``GET /`` the page, ``GET /static/<file>`` its
script and style, ``GET /api/fleet`` everything the page shows as JSON,
``GET /devices/<id>/preview.jpg`` the last watermarked picture (a room's composite),
``GET /devices/<id>/tracks/<track>.jpg`` one track's, and
``POST /api/devices/<id>/<action>``: on a body recorder ``record``, ``marker``,
``explain``, ``camera-fault``/``camera-ok``, ``microphone-fault``/``microphone-ok``,
``gps-lost``/``gps-ok``, ``storage-fill`` (``?free_bytes=``, default 0)/``storage-free``,
``network-down``/``network-up`` (with sync), ``clock-jump`` (``?seconds=``, default
3600), ``battery`` (``?percent=``, ``external=``, ``drain_per_hour=``), ``power-cut`` and
``power-on``; on a room ``door-close``, ``door-open``, ``key-start``, ``key-stop``,
``open-session`` and ``close-session`` (with sync; an optional JSON body ``{"case",
"badges", "person"}``), ``explain``, and ``camera-fault``/``camera-ok`` with
``?camera=<track>``. ``case-open`` and ``case-close``, the old names of the room's two,
still work this release; the reply says ``"deprecated"``. A refused action answers
``{"error": ...}`` with 400 (a bad figure) or 409 (not now: the device is off, no sync).

Example::

    $ unbroken sim panel --devices 2 --rooms 1
    panel: http://127.0.0.1:41235/  (2 devices, 1 room, sync on; Ctrl-C stops)

    # in-process, as the tests do
    with Fleet(workdir, devices=1, config=config, sync=False, rooms=1) as fleet:
        with PanelServer(fleet) as server:
            print(server.url)        # open it; fleet.devices[0].dev.recorder records
            fleet.rooms[0].act("door-close")    # as the page's buttons do
            fleet.devices[0].act("clock-jump", {"seconds": -3600})
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from agent import enrolment
from agent.config import load_config
from agent.recorder import Recorder
from agent.run import make_uploader
from agent.sync import SyncLedger, Uploader
from common.settings import DeviceConfig, Recording, Room
from device.clock import SimClock
from evidence.names import ProvisionError
from simulator.control import (
    Command,
    ControlError,
    NetworkSwitch,
    SimParts,
    parse_command,
)
from simulator.device import SimDevice

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from simulator.site import LocalSite

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("web")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
EVENTS_SHOWN = 12  # chain entries per device in /api/fleet
ROOM_EVENTS_SHOWN = 18  # per room: each segment is one entry per track
PREVIEW_WIDTH = 640  # larger pictures are scaled down for the page
CAMERA_PREVIEW_WIDTH = 320  # a room's cameras, shown small beside the composite
FIRST_ROOM = 101  # rooms are numbered from here: 101, 102, ...
CASE_BADGES = ("340102", "340177")  # the case system's officers, when the config names none
CASE_PERSON = "李某"  # the person interviewed, when the page names none
FIRST_BADGE = 340201  # the officers wearing the fleet's body recorders: 340201, 340202, ...
SYNC_GRACE_SECONDS = 10.0  # at stop: time given to the uploaders to send the last entries


def panel_config() -> DeviceConfig:
    """Small pictures, so that a fleet runs in real time on a laptop."""
    return DeviceConfig(
        recording=Recording(width=640, height=360, fps=15, prebuffer_seconds=10),
    )


class ActionError(Exception):
    """An action the device cannot take as asked: a bad argument (400), or not possible
    here and now (409, e.g. the case system without sync)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


# A tester's button -> the control channel's command (docs/testers-guide.md): the same
# switches the scenarios flip, carried out the same way. Each takes the request's args.
TESTER_COMMANDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "explain": lambda a: {"cmd": "explain"},
    "camera-fault": lambda a: {"cmd": "camera", "ok": False},
    "camera-ok": lambda a: {"cmd": "camera", "ok": True},
    "microphone-fault": lambda a: {"cmd": "microphone", "ok": False},
    "microphone-ok": lambda a: {"cmd": "microphone", "ok": True},
    "gps-lost": lambda a: {"cmd": "gps", "ok": False},
    "gps-ok": lambda a: {"cmd": "gps", "ok": True},
    "storage-fill": lambda a: {"cmd": "storage", "free_bytes": a.get("free_bytes", 0)},
    "storage-free": lambda a: {"cmd": "storage", "free_bytes": None},
    "network-down": lambda a: {"cmd": "network", "up": False},
    "network-up": lambda a: {"cmd": "network", "up": True},
    "clock-jump": lambda a: {"cmd": "clock_jump", "seconds": a.get("seconds", 3600)},
    "battery": lambda a: {
        "cmd": "battery",
        **{k: a[k] for k in ("percent", "external", "drain_per_hour") if k in a},
    },
}


def tester_command(action: str, args: Mapping[str, Any]) -> Command:
    """The control command a tester's button stands for, with its figures from ``args``
    (the query's text, or the JSON body's values); ``KeyError`` for no such button,
    :class:`ActionError` for a figure the command refuses.

    >>> tester_command("clock-jump", {"seconds": "-3600"})
    ClockJump(cmd='clock_jump', seconds=-3600.0)
    """
    try:
        return parse_command(TESTER_COMMANDS[action](args))
    except ControlError as e:
        raise ActionError(str(e)) from None


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
        self._ledger: SyncLedger | None = None
        self._db_lock = threading.Lock()
        self._preview_lock = threading.Lock()
        self._press_lock = threading.Lock()  # two presses at once would merge into one
        self._previews: dict[str, tuple[np.ndarray | None, bytes]] = {}
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
        self._open_ledger()  # its own connection; the journal exists now
        self._take_snapshot(storage=True)
        if self.uploader is not None and self.network is not None:
            rec = self.dev.recorder
            self.uploader.status_source = lambda: dict(self.snapshot.get("status", {}))
            self.uploader.on_command = lambda data: rec.post(lambda: rec.apply_command(data))
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
        self._close_ledger()

    def _open_ledger(self) -> None:
        with self._db_lock:
            self._ledger = SyncLedger(self.root)

    def _close_ledger(self) -> None:
        with self._db_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

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
        self._close_ledger()
        self.dev.controls.show("off")  # the LED goes dark with the power
        with tempfile.TemporaryDirectory(dir=self.root.parent) as tmp:
            disk = Path(tmp) / "disk"
            # SQLite rebuilds its shared-memory index from the WAL, as after a crash.
            shutil.copytree(self.root, disk, ignore=shutil.ignore_patterns("*-shm"))
            self.dev.stop()  # frees the pins, the cameras and the chain's lock ...
            shutil.rmtree(self.root)
            disk.rename(self.root)  # ... and what its shutdown wrote is undone
        self._open_ledger()
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
        self._close_ledger()
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
        figures, see :func:`tester_command`)."""
        pins: dict[str, Callable[[], object]] = {
            "record": self.dev.press_record,
            "marker": self.dev.press_marker,
            "power-cut": self.power_cut,
        }
        if action == "power-on":
            with self._press_lock:
                self.power_on()
            return
        cmd = None if action in pins else tester_command(action, args or {})
        with self._press_lock:
            if self.dev.recorder.powered_off:
                raise ActionError(f"{self.id} is off: power it on first", HTTPStatus.CONFLICT)
            if cmd is None:
                pins[action]()
            else:
                self.control(cmd)

    def control(self, cmd: Command) -> dict[str, Any]:
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
            "events": self.events(self.events_shown),
            "preview": f"/devices/{self.id}/preview.jpg",
        }

    def _sync(self) -> dict[str, Any]:
        up = self.uploader
        with self._db_lock:
            if self._ledger is None:
                return {"enabled": up is not None}
            backlog = self._ledger.backlog()
            db = self._ledger.db
            sealed = db.execute("select count(*) from entries where kind = 'segment'").fetchone()[0]
            total = db.execute("select count(*) from entries").fetchone()[0]
        return {
            "enabled": up is not None,
            "connected": bool(up and up.connected.is_set()),
            "deadline": up.deadline_level if up else None,
            "segments_sealed": sealed,
            "segments_receipted": sealed - backlog["blobs"],
            "entries": total,
            "entries_unsynced": backlog["entries"],
            "backlog": backlog,
            "refusals": list(up.refusals[-3:]) if up else [],
        }

    def events(self, limit: int = EVENTS_SHOWN) -> list[dict[str, Any]]:
        """The newest chain entries, newest first."""
        with self._db_lock:
            if self._ledger is None:
                return []
            rows = self._ledger.db.execute(
                "select seq, kind, session, wall, json_extract(entry, '$.payload.body') as body"
                " from entries order by seq desc limit ?",
                (limit,),
            ).fetchall()
        return [
            {
                "seq": r["seq"],
                "kind": r["kind"],
                "session": r["session"],
                "wall": r["wall"],
                "summary": summarize(r["kind"], json.loads(r["body"] or "{}")),
            }
            for r in rows
        ]

    @property
    def main_track(self) -> str:
        """The track the big preview shows."""
        return self.dev.config.tracks[0]

    def preview_width(self, track: str) -> int:
        return PREVIEW_WIDTH

    def preview_jpeg(self, track: str | None = None) -> bytes:
        """The last watermarked picture of ``track`` (default: :attr:`main_track`) as JPEG,
        encoded once per frame, on demand; ``KeyError`` for a track the device lacks."""
        track = track or self.main_track
        if track not in self.dev.config.tracks:
            raise KeyError(track)
        picture = self.dev.recorder.pictures.get(track)
        width = self.preview_width(track)
        with self._preview_lock:
            cached, data = self._previews.get(track, (None, b""))
            if picture is not None and picture is cached:
                return data
            if picture is None:
                if data:
                    return data  # e.g. after the device stopped: the last picture
                rec = self.dev.config.recording
                picture = np.full((rec.height, rec.width, 3), 40, np.uint8)
            img = Image.fromarray(picture)
            if img.width > width:
                img = img.resize((width, img.height * width // img.width))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
            self._previews[track] = (picture, buf.getvalue())
            return self._previews[track][1]


class SimPanel:
    """A room's panel as a tester works it: the door contact and the key switch.

    With a broker (``client``: :meth:`~simulator.site.LocalSite.panel_client`, connected
    with the panel's own certificate) it publishes what the firmware (device/panel/main.py)
    publishes, through the broker's ACL: ``online`` and the door, retained, on connecting;
    the door, retained, when it moves; the key, not retained, when it turns. It reads the
    controller's retained ``state`` as the firmware does: that is what lights the panel's
    lamp. Without a broker the door and the key go straight to ``recorder.room_input``."""

    def __init__(self, recorder: Recorder, room: str | None, client: mqtt.Client | None) -> None:
        self.recorder = recorder
        self.client = client
        self.prefix = f"unbroken/p/{room}/"
        self.door_closed = False
        self.key: str | None = None  # "start" or "stop", once turned
        self.shown: str | None = None  # the controller's state as the panel received it
        self.seen: list[str] = []  # the states received, each change once, in order
        self._lock = threading.Lock()
        if client is None:
            recorder.room_input("door", b"open")  # as the firmware tells on connecting
            return
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        if client.is_connected():  # connected before the callback was set: say it now
            self._on_connect(client)

    @property
    def via(self) -> str:
        return "direct" if self.client is None else "broker"

    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected()

    def door(self, closed: bool) -> None:
        with self._lock:
            self.door_closed = closed
            self._send("door", self._door(), retain=True)

    def turn_key(self, start: bool) -> None:
        with self._lock:
            self.key = "start" if start else "stop"
            self._send("key", self.key.encode(), retain=False)

    def _door(self) -> bytes:
        return b"closed" if self.door_closed else b"open"

    def _send(self, what: str, payload: bytes, retain: bool) -> None:
        if self.client is None:
            self.recorder.room_input(what, payload)
        else:
            self.client.publish(self.prefix + what, payload, qos=1, retain=retain)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.prefix + "state", qos=1)
        client.publish(self.prefix + "panel", b"online", qos=1, retain=True)
        client.publish(self.prefix + "door", self._door(), qos=1, retain=True)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.prefix + "state":
            state = msg.payload.decode("utf-8", "replace")
            if state != self.shown:
                self.seen.append(state)
            self.shown = state

    def close(self) -> None:
        if self.client is None:
            return
        info = self.client.publish(self.prefix + "panel", b"offline", qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


class CaseSystem:
    """The agency's case system, as far as the page needs it: signed ``session_open`` and
    ``session_close`` commands for a room controller, published to it through the broker
    as ``unbroken store send`` would. One at a time: the agency's registry has one writer."""

    def __init__(self, site: LocalSite) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._cases = 0

    def next_case(self, room: str) -> str:
        with self._lock:
            self._cases += 1
            return f"SIM-{room}-{time.strftime('%Y')}-{self._cases:04d}"

    def send(
        self, device: str, name: Literal["session_open", "session_close"], **args: Any
    ) -> None:
        with self._lock:
            data = self.site.session_command(device, name, **args)
            self.site.send_command(device, name, data)


class LiveRoom(LiveDevice):
    """An interview-room controller in real time, with its panel and (with sync) the case
    system: the door, the key and the case system's commands are the page's buttons, and
    a tester breaks each camera on its own."""

    kind = "room"
    events_shown = ROOM_EVENTS_SHOWN

    def __init__(
        self,
        dev: SimDevice,
        uploader: Uploader | None,
        panel: SimPanel,
        cases: CaseSystem | None = None,
    ) -> None:
        super().__init__(dev, uploader)
        assert dev.config.room, "a room controller needs a room configuration"
        self.room = dev.config.room
        self.panel = panel
        self.cases = cases
        self.case: str | None = None  # the case the page's case system opened, until closed
        self.cameras_failed: set[str] = set()

    def close(self) -> None:
        self.panel.close()
        super().close()

    @property
    def main_track(self) -> str:
        return self.room.pip.track if self.room.pip else self.room.cameras[0]

    def preview_width(self, track: str) -> int:
        return PREVIEW_WIDTH if track == self.main_track else CAMERA_PREVIEW_WIDTH

    def act(self, action: str, args: Mapping[str, Any] | None = None) -> None:
        """The panel's door and key, the case system's open and close (``args``: the
        case, badges and person, else made up), explain, and a fault on the camera
        ``args["camera"]``."""
        a = dict(args or {})
        actions: dict[str, Callable[[], object]] = {
            "door-close": lambda: self.panel.door(True),
            "door-open": lambda: self.panel.door(False),
            "key-start": lambda: self.panel.turn_key(True),
            "key-stop": lambda: self.panel.turn_key(False),
            "open-session": lambda: self._case(True, a),
            "close-session": lambda: self._case(False, a),
            "explain": lambda: self.control(tester_command("explain", a)),
            "camera-fault": lambda: self._room_camera(a.get("camera"), True),
            "camera-ok": lambda: self._room_camera(a.get("camera"), False),
        }
        if action not in actions:
            raise KeyError(action)
        with self._press_lock:
            actions[action]()

    def _case(self, opening: bool, args: dict[str, Any]) -> None:
        if self.cases is None:
            raise ActionError("no case system without sync", HTTPStatus.CONFLICT)
        room = self.dev.recorder.room_id or "-"
        try:
            if opening:
                case = str(args.get("case") or self.cases.next_case(room))
                badges = args.get("badges")
                if badges is None:
                    badges = list(self.dev.config.session.badges) or list(CASE_BADGES)
                person = args.get("person", CASE_PERSON)
                self.cases.send(self.id, "session_open", case=case, badges=badges, person=person)
                self.case = case
            else:
                case = str(args.get("case") or self.case or "")
                if not case:
                    raise ActionError(
                        "the case system opened no case here: nothing for it to close",
                        HTTPStatus.CONFLICT,
                    )
                self.cases.send(self.id, "session_close", case=case)
                self.case = None
        except (ValueError, ProvisionError) as e:  # pydantic's ValidationError is a ValueError
            raise ActionError(f"case system: {e}") from e

    def _room_camera(self, track: object, failed: bool) -> None:
        camera = self.dev.cameras.get(str(track))
        if camera is None:
            names = ", ".join(self.dev.cameras)
            raise ActionError(f"camera={track!s}: not a camera of this room ({names})")
        if failed:
            self.cameras_failed.add(str(track))
        else:
            self.cameras_failed.discard(str(track))
        self.dev.recorder.post(lambda: camera.fail(failed))

    def _more_snapshot(self) -> dict[str, Any]:
        rec = self.dev.recorder
        assert rec.room
        return {
            "room": {
                "panel_state": rec.panel_state,
                "door_closed": rec.room.door_closed,
                "awaiting": rec.room.awaiting,
                "opened_by": rec.room.opened_by,
            }
        }

    def view(self) -> dict[str, Any]:
        v = super().view()
        snap = self.snapshot.get("room", {})
        status = self.snapshot.get("status", {})
        door = snap.get("door_closed")
        v["room"] = {
            "id": status.get("room"),
            "panel_state": snap.get("panel_state"),
            "lamp": self.dev.lamp_lit(),
            "door": None if door is None else ("closed" if door else "open"),
            "awaiting": snap.get("awaiting", False),
            "opened_by": snap.get("opened_by"),
            "key": self.panel.key,
            "panel": {
                "via": self.panel.via,
                "connected": self.panel.connected(),
                "shows": self.panel.shown,
            },
            "case_system": self.cases is not None,
            "case": self.case,
            "cameras": [{"track": t, "fault": t in self.cameras_failed} for t in self.room.cameras],
            "tracks": self.room.tracks,
            "main_track": self.main_track,
        }
        v["previews"] = {t: f"/devices/{self.id}/tracks/{t}.jpg" for t in self.room.tracks}
        return v


def summarize(kind: str, body: dict[str, Any]) -> str:
    """One line for the event log."""
    if kind == "boot":
        return str(body.get("software", ""))
    if kind == "config":
        return f"settings {str(body.get('sha256', ''))[:12]}"
    if kind == "session_open":
        badges = ", ".join(body.get("badges") or []) or "no badge"
        parts = [f"{body.get('category')} ({badges})"]
        if body.get("trigger"):
            parts.insert(0, f"by {body['trigger']}")
        if body.get("case"):
            parts.append(f"case {body['case']}")
        return ", ".join(parts)
    if kind == "session_close":
        by = f", by {body['trigger']}" if body.get("trigger") else ""
        return f"{body.get('segments')} segments{by}"
    if kind == "segment":
        try:
            seconds = float(body["end"]["wall"]) - float(body["start"]["wall"])
        except (KeyError, TypeError, ValueError):
            seconds = 0.0
        pre = " pre-event" if body.get("prebuffer") else ""
        track = body.get("track")
        if track and track != "main":
            pre = f" {track}{pre}"
        fix = (body.get("location") or {}).get("fix", "?")
        return (
            f"#{body.get('index')}{pre} {seconds:.1f} s, {int(body.get('size', 0)) // 1024} KiB, "
            f"fix {fix}"
        )
    if kind == "marker":
        return f"{body.get('type')} {body.get('note') or ''}".strip()
    if kind == "interruption":
        return f"{body.get('cause')}: {body.get('detail') or ''}".rstrip(": ")
    if kind == "interruption_end":
        return f"gap {str(body.get('id', ''))[:8]} ended"
    if kind == "explanation":
        return f"{body.get('kind')} explanation of gap {str(body.get('interruption', ''))[:8]}"
    if kind == "event":
        case = f" {body['case']}" if body.get("type") == "case" and body.get("case") else ""
        return f"{body.get('type', '')}{case}"
    if kind == "shutdown":
        return str(body.get("reason", ""))
    if kind == "install":
        broker = body.get("broker") or {}
        return (
            f"provisioned by agency key {body.get('agency_key_id')}, "
            f"broker {broker.get('host')}:{broker.get('port')}"
        )
    if kind == "key_rotation":
        return f"new key {str(body.get('new_key', ''))[:16]}"
    if kind == "assignment":
        if body.get("room"):
            return f"room {body['room']}"
        return ", ".join(body.get("badges") or []) or "unassigned"
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class Fleet:
    """N simulated body recorders and M interview rooms in real time, with a local agency
    site to sync to (optional). A room is numbered from 101 and its controller is
    ``room-sim-<room>``; its configuration is ``config`` with a ``[room]`` section (the
    default room if ``config`` has none), and a body recorder's is ``config`` without."""

    def __init__(
        self,
        workdir: Path,
        devices: int = 2,
        config: DeviceConfig | None = None,
        sync: bool = False,
        rooms: int = 0,
    ) -> None:
        if devices < 0 or rooms < 0 or devices + rooms < 1:
            raise ValueError("a fleet needs at least one device or room")
        self.workdir = workdir.resolve()
        self.config = config or panel_config()
        self.body_config = self.config.model_copy(update={"room": None})
        self.room_config = (
            self.config if self.config.room else self.config.model_copy(update={"room": Room()})
        )
        self.sync = sync
        self.count = devices
        self.room_count = rooms
        self.site: LocalSite | None = None
        self.cases: CaseSystem | None = None
        self.devices: list[LiveDevice] = []  # body recorders first, then rooms
        self._started = False

    @property
    def rooms(self) -> list[LiveRoom]:
        return [d for d in self.devices if isinstance(d, LiveRoom)]

    def start(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._started = True
        body_ids = [f"bwc-sim-{i:02d}" for i in range(1, self.count + 1)]
        rooms = [str(FIRST_ROOM + i) for i in range(self.room_count)]
        site = None
        if self.sync:
            from simulator.site import LocalSite

            site = self.site = LocalSite(self.workdir / "site")
            site.start_broker()
            site.start_store()
            self.cases = CaseSystem(site)
            # Everything enrolled before anything connects: each room and panel reloads the
            # broker's ACL.
            body_settings = self.body_config.model_dump(mode="json", exclude_defaults=True)
            room_settings = self.room_config.model_dump(mode="json", exclude_defaults=True)
            body_data = [site.provision_device(d, settings=body_settings) for d in body_ids]
            for device_id, data in zip(body_ids, body_data, strict=True):
                self._assign(site, device_id, data)
            room_data = [
                site.provision_device(f"room-sim-{r}", settings=room_settings, room=r)
                for r in rooms
            ]
            for r in rooms:
                site.enroll_panel(r)
        else:
            body_data = [
                self.workdir / "devices" / f"sim-{i:02d}" for i in range(1, self.count + 1)
            ]
            room_data = [self.workdir / "devices" / f"room-{r}" for r in rooms]
        for data, device_id in zip(body_data, body_ids, strict=True):
            clock = SimClock(wall_start=time.time())  # simulated time, starting now
            config = self.body_config
            if site is None:  # no agency to assign them: the settings name the officer
                session = config.session.model_copy(update={"badges": self.badges(device_id)})
                config = config.model_copy(update={"session": session})
            dev = SimDevice(data, config, clock=clock, realtime=True)
            if site is None:
                live = LiveDevice(dev)
            else:
                live = LiveDevice(dev, site.uploader(data, clock), site.uploader)
            self.devices.append(live)
            live.start()
        for room, data in zip(rooms, room_data, strict=True):
            clock = SimClock(wall_start=time.time())
            dev = SimDevice(data, self.room_config, clock=clock, realtime=True)
            uploader = None
            if site is not None:
                # The room's uploader also talks with the panel (room topics, on_panel).
                uploader = make_uploader(data, dev.recorder, self.room_config, dev.clock)
            client = site.panel_client(room) if site else None
            panel = SimPanel(dev.recorder, room if site else None, client)
            live_room = LiveRoom(dev, uploader, panel, self.cases)
            self.devices.append(live_room)
            live_room.start()
            # The key is not retained: a turn before the controller listens would be lost.
            if uploader is not None and not uploader.connected.wait(10):
                log.warning("%s has not connected to the broker yet", live_room.id)

    def badges(self, device_id: str) -> list[str]:
        """Who wears body recorder ``device_id``: the configured badges, else one officer
        each (bwc-sim-01 is 340201's)."""
        if self.body_config.session.badges:
            return list(self.body_config.session.badges)
        return [str(FIRST_BADGE + int(device_id.rsplit("-", 1)[1]) - 1)]

    def _assign(self, site: LocalSite, device_id: str, data: Path) -> None:
        """The agency assigns the recorder to its officer: a signed command, applied."""
        command = site.workdir / "outbox" / f"{device_id}-assign.cmd"
        command.parent.mkdir(parents=True, exist_ok=True)
        site.agency.assign(device_id, command, time.time(), badges=self.badges(device_id))
        enrolment.apply_command(data, command.read_bytes(), time.time())

    def device(self, device_id: str) -> LiveDevice | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def view(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "sync": self.sync,
            "broker": f"127.0.0.1:{self.site.port}" if self.site else None,
            "time": time.time(),
            "rooms": self.room_count,
            "devices": [d.view() for d in self.devices],
        }

    def stop(self) -> None:
        """Close open sessions, stop the devices, let the uploaders send what was sealed
        last (a few seconds at most), then stop sync and the site."""
        if not self._started:
            return
        self._started = False
        for d in self.devices:
            d.request_stop()
        for d in self.devices:
            d.stop()
        deadline = time.monotonic() + SYNC_GRACE_SECONDS
        for d in self.devices:
            if d.uploader is not None and d.uploader.connected.is_set():
                d.uploader.wait_idle(max(0.0, deadline - time.monotonic()))
        for d in self.devices:
            d.close()
        if self.site is not None:
            self.site.close()
            self.site = None

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_PREVIEW = re.compile(r"^/devices/([^/]+)/preview\.jpg$")
_TRACK = re.compile(r"^/devices/([^/]+)/tracks/([^/]+)\.jpg$")
_ACTION = re.compile(r"^/api/devices/([^/]+)/([a-z-]+)$")
# Old names of the API's actions, answered for one more release (with a note): the CLI's
# names are the API's (``unbroken provision open-session``).
RENAMED_ACTIONS = {"case-open": "open-session", "case-close": "close-session"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path == "/api/fleet":
            self._send(HTTPStatus.OK, "application/json", self.server.fleet_json())
        elif m := _PREVIEW.match(path) or _TRACK.match(path):
            dev = self.server.fleet.device(m[1])
            track = m[2] if m.re is _TRACK else None
            if dev is None:
                self._error(HTTPStatus.NOT_FOUND, f"no device {m[1]}")
                return
            try:
                jpeg = dev.preview_jpeg(track)
            except KeyError:
                self._error(HTTPStatus.NOT_FOUND, f"{dev.id} has no track {track}")
                return
            self._send(HTTPStatus.OK, "image/jpeg", jpeg)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def do_POST(self) -> None:
        """The action is in the path; its arguments in the query (``?camera=subject``)
        and, for the case system, an optional JSON object as the body."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        path = url.path
        args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if body.strip():
            try:
                extra = json.loads(body)
            except ValueError:
                extra = None
            if not isinstance(extra, dict):
                self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
                return
            args.update(extra)
        m = _ACTION.match(path)
        if not m:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")
            return
        dev = self.server.fleet.device(m[1])
        if dev is None:
            self._error(HTTPStatus.NOT_FOUND, f"no device {m[1]}")
            return
        action, note = m[2], {}
        if action in RENAMED_ACTIONS:
            action = RENAMED_ACTIONS[m[2]]
            note = {"deprecated": f"{m[2]} is now {action}; the old name goes in the next release"}
            log.warning("POST %s: %s", path, note["deprecated"])
        try:
            dev.act(action, args)
        except KeyError:
            self._error(HTTPStatus.BAD_REQUEST, f"unknown action {action} for a {dev.kind}", note)
            return
        except ActionError as e:
            self._error(e.status, str(e), note)
            return
        body = json.dumps({"ok": True, "device": dev.id, "action": action, **note}).encode()
        self._send(HTTPStatus.OK, "application/json", body)

    def _static(self, name: str) -> None:
        if name not in STATIC_TYPES:
            self._error(HTTPStatus.NOT_FOUND, f"no file {name}")
            return
        self._send(HTTPStatus.OK, STATIC_TYPES[name], (STATIC / name).read_bytes())

    def _error(
        self, status: HTTPStatus, message: str, note: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": message, **(note or {})}).encode()
        self._send(status, "application/json", body)

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fleet: Fleet) -> None:
        super().__init__(address, _Handler)
        self.fleet = fleet
        self._cache_lock = threading.Lock()
        self._cache: tuple[float, bytes] = (0.0, b"")

    def fleet_json(self) -> bytes:
        """The fleet's view; computed at most every 100 ms, however many pages poll."""
        with self._cache_lock:
            at, body = self._cache
            if time.monotonic() - at > 0.1:
                body = json.dumps(self.fleet.view(), ensure_ascii=False).encode()
                self._cache = (time.monotonic(), body)
            return body


class PanelServer:
    """The panel's HTTP server on its own thread; ``port=0`` picks a free port."""

    def __init__(self, fleet: Fleet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = _Server((host, port), fleet)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="sim-panel", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> PanelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PanelServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def mosquitto_available() -> bool:
    from simulator.broker import BrokerError, mosquitto_binary

    try:
        mosquitto_binary()
    except BrokerError:
        return False
    return True


def cmd_panel(args: argparse.Namespace) -> int:
    if args.devices < 0 or args.rooms < 0 or args.devices + args.rooms < 1:
        print(
            "unbroken: error: --devices and --rooms: none negative, one device or room at least",
            file=sys.stderr,
        )
        return 2
    sync = mosquitto_available() if args.sync is None else args.sync
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="unbroken-panel-"))
    else:
        workdir = args.workdir
        if workdir.exists() and any(workdir.iterdir()):
            print(f"unbroken: error: --workdir {workdir} is not empty", file=sys.stderr)
            return 2
    config = load_config(args.config) if args.config else panel_config()
    if args.explain_mode:
        continuity = config.continuity.model_copy(update={"explain_mode": args.explain_mode})
        config = config.model_copy(update={"continuity": continuity})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with (
        Fleet(workdir, args.devices, config, sync, rooms=args.rooms) as fleet,
        PanelServer(fleet, args.host, args.port) as server,
    ):
        print(
            f"panel: {server.url}  ({args.devices} device{'s' * (args.devices != 1)}, "
            f"{args.rooms} room{'s' * (args.rooms != 1)}, "
            f"sync {'on' if sync else 'off'}, workdir {workdir}; Ctrl-C stops)",
            flush=True,
        )
        stop.wait()
        print("stopping: closing sessions, stopping devices", flush=True)
    return 0

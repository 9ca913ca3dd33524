"""``unbroken sim panel``: a page in the browser for a simulated fleet.

Each device is a :class:`~simulator.device.SimDevice` stepping frames in real time on its
own thread. The page shows, for each one, its record, marker and explain buttons, the
recording LED (the gpiozero mock pin, and the pattern the recorder asks for), battery,
storage, GPS, state and session, a live preview of the watermarked picture, the chain's
latest entries and the sync backlog; buttons for a tester break the camera or the GPS.
A click on record drives the record button's mock pin, exactly as the switch would.

With sync (the default when Mosquitto is installed) a :class:`~simulator.site.LocalSite`
runs its broker and a store worker, every device is provisioned and runs its real
uploader, and the backlog shows segments sealed against receipted. Without it, everything
stays unsynced.

The server is the standard library's: ``GET /`` the page, ``GET /static/<file>`` its
script and style, ``GET /api/fleet`` everything the page shows as JSON,
``GET /devices/<id>/preview.jpg`` the last watermarked picture,
``POST /api/devices/<id>/<action>`` with action ``record``, ``marker``, ``explain``,
``camera-fault``, ``camera-ok``, ``gps-lost`` or ``gps-ok``.

Example::

    $ unbroken sim panel --devices 2
    panel: http://127.0.0.1:41235/  (2 devices, sync on; Ctrl-C stops)

    # in-process, as the tests do
    with Fleet(workdir, devices=1, config=config, sync=False) as fleet:
        with PanelServer(fleet) as server:
            print(server.url)        # open it; fleet.devices[0].dev.recorder records
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from agent.config import DeviceConfig, Recording, load_config
from agent.run import show_state
from agent.sync import SyncLedger, Uploader
from device.clock import SimClock
from device.gnss import Gnss, GnssState
from simulator.device import SimDevice

if TYPE_CHECKING:
    from simulator.site import LocalSite

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("web")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
EVENTS_SHOWN = 12  # chain entries per device in /api/fleet
PREVIEW_WIDTH = 640  # larger pictures are scaled down for the page
SYNC_GRACE_SECONDS = 10.0  # at stop: time given to the uploaders to send the last entries


def panel_config() -> DeviceConfig:
    """Small pictures, so that a fleet runs in real time on a laptop."""
    return DeviceConfig(
        recording=Recording(width=640, height=360, fps=15, prebuffer_seconds=10),
    )


class GpsJam:
    """A GNSS receiver a tester can blind: while ``jammed`` it reports no fix, keeping the
    last one (as a receiver in an underpass does), so the watermark shows its age."""

    def __init__(self, inner: Gnss) -> None:
        self.inner = inner
        self.jammed = False

    def state(self) -> GnssState:
        st = self.inner.state()
        return GnssState(st.last_fix, False) if self.jammed else st

    def close(self) -> None:
        self.inner.close()


class LiveDevice:
    """One simulated recorder in real time, on its own thread.

    Only that thread touches the recorder; everything else reads :attr:`snapshot` (a dict
    replaced whole after every frame), the mock pins, the last picture, or the journal
    through its own database connection, and acts through the mock pins or
    ``recorder.post``."""

    def __init__(self, dev: SimDevice, uploader: Uploader | None = None) -> None:
        self.dev = dev
        self.uploader = uploader
        self.gps = GpsJam(dev.recorder.hw.gnss)
        dev.recorder.hw.gnss = self.gps
        self.id = dev.recorder.device_id
        self.root = dev.recorder.root
        self.camera_failed = False
        self.snapshot: dict[str, Any] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.id}", daemon=True)
        self._ledger: SyncLedger | None = None
        self._db_lock = threading.Lock()
        self._preview_lock = threading.Lock()
        self._press_lock = threading.Lock()  # two presses at once would merge into one
        self._preview: tuple[np.ndarray | None, bytes] = (None, b"")
        self._storage: dict[str, Any] = {}
        self._frames = 0
        self._fps = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.dev.start()
        self._ledger = SyncLedger(self.root)  # its own connection; the journal exists now
        self._take_snapshot(storage=True)
        if self.uploader is not None:
            rec = self.dev.recorder
            self.uploader.status_source = lambda: dict(self.snapshot.get("status", {}))
            self.uploader.on_command = lambda data: rec.post(lambda: rec.apply_command(data))
            self.uploader.start()
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
        with self._db_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def _run(self) -> None:
        dev, rec = self.dev, self.dev.recorder
        fps = dev.config.recording.fps
        t0, n = time.monotonic(), 0
        rate_t, rate_n = t0, 0
        try:
            while not self._stop.is_set() and not rec.powered_off:
                rec.step()
                dev.controls.show(rec.indicator)
                show_state(rec, self.uploader, dev.lamp)
                n += 1
                self._frames = n
                self._take_snapshot(storage=n % fps == 0)
                now = time.monotonic()
                if now - rate_t >= 2.0:
                    self._fps = (n - rate_n) / (now - rate_t)
                    rate_t, rate_n = now, n
                delay = t0 + n / fps - now
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -1.0:  # fell behind (a busy machine): do not race to catch up
                    t0 = now - n / fps
                dev.clock.advance(1 / fps)
        except Exception as e:  # a crash of the simulation, not of the page: show it
            log.exception("device %s stopped", self.id)
            self.error = f"{type(e).__name__}: {e}"
        finally:
            dev.stop()  # closes an open session; after a battery shutdown only the pins
            self._take_snapshot(storage=True)

    # -- what the tester does --------------------------------------------------------

    def act(self, action: str) -> None:
        rec = self.dev.recorder
        actions: dict[str, Callable[[], object]] = {
            "record": self.dev.press_record,
            "marker": self.dev.press_marker,
            # There is no explain pin: the explain control is the recorder's call, queued.
            "explain": lambda: rec.post(rec.explain),
            "camera-fault": lambda: self._camera(True),
            "camera-ok": lambda: self._camera(False),
            "gps-lost": lambda: self._gps(True),
            "gps-ok": lambda: self._gps(False),
        }
        if action not in actions:
            raise KeyError(action)
        with self._press_lock:
            actions[action]()

    def _camera(self, failed: bool) -> None:
        self.camera_failed = failed
        self.dev.recorder.post(lambda: self.dev.camera.fail(failed))

    def _gps(self, lost: bool) -> None:
        def jam() -> None:
            self.gps.jammed = lost

        self.dev.recorder.post(jam)

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
                "jammed": self.gps.jammed,
            },
        }

    def view(self) -> dict[str, Any]:
        """Everything the page shows for this device (any thread)."""
        snap = self.snapshot
        status = snap.get("status", {})
        return {
            "id": self.id,
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
            "camera_fault": self.camera_failed,
            **{k: snap.get(k) for k in ("clock", "frames", "fps", "battery", "storage", "gps")},
            "sync": self._sync(),
            "events": self.events(),
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

    def preview_jpeg(self) -> bytes:
        """The last watermarked picture as JPEG (encoded once per frame, on demand)."""
        picture = self.dev.recorder.pictures.get("main")
        with self._preview_lock:
            cached, data = self._preview
            if picture is not None and picture is cached:
                return data
            if picture is None:
                if data:
                    return data  # e.g. after the device stopped: the last picture
                rec = self.dev.config.recording
                picture = np.full((rec.height, rec.width, 3), 40, np.uint8)
            img = Image.fromarray(picture)
            if img.width > PREVIEW_WIDTH:
                img = img.resize((PREVIEW_WIDTH, img.height * PREVIEW_WIDTH // img.width))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
            self._preview = (picture, buf.getvalue())
            return self._preview[1]


def summarize(kind: str, body: dict[str, Any]) -> str:
    """One line for the event log."""
    if kind == "boot":
        return str(body.get("software", ""))
    if kind == "config":
        return f"settings {str(body.get('sha256', ''))[:12]}"
    if kind == "session_open":
        badges = ", ".join(body.get("badges") or []) or "no badge"
        return f"{body.get('category')} ({badges})"
    if kind == "session_close":
        return f"{body.get('segments')} segments"
    if kind == "segment":
        try:
            seconds = float(body["end"]["wall"]) - float(body["start"]["wall"])
        except (KeyError, TypeError, ValueError):
            seconds = 0.0
        pre = " pre-event" if body.get("prebuffer") else ""
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
        return str(body.get("type", ""))
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
        return ", ".join(body.get("badges") or []) or "unassigned"
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class Fleet:
    """N simulated devices in real time, with a local agency site to sync to (optional)."""

    def __init__(
        self,
        workdir: Path,
        devices: int = 2,
        config: DeviceConfig | None = None,
        sync: bool = False,
    ) -> None:
        if devices < 1:
            raise ValueError("a fleet needs at least one device")
        self.workdir = workdir.resolve()
        self.config = config or panel_config()
        self.sync = sync
        self.count = devices
        self.site: LocalSite | None = None
        self.devices: list[LiveDevice] = []
        self._started = False

    def start(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._started = True
        settings = self.config.model_dump(mode="json", exclude_defaults=True)
        if self.sync:
            from simulator.site import LocalSite

            self.site = LocalSite(self.workdir / "site")
            self.site.start_broker()
            self.site.start_store()
        for i in range(1, self.count + 1):
            clock = SimClock(wall_start=time.time())  # simulated time, starting now
            uploader = None
            if self.site is not None:
                data = self.site.provision_device(f"bwc-sim-{i:02d}", settings=settings)
                dev = SimDevice(data, self.config, clock=clock, realtime=True)
                uploader = self.site.uploader(data, clock)
            else:
                data = self.workdir / "devices" / f"sim-{i:02d}"
                dev = SimDevice(data, self.config, clock=clock, realtime=True)
            live = LiveDevice(dev, uploader)
            self.devices.append(live)
            live.start()

    def device(self, device_id: str) -> LiveDevice | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def view(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "sync": self.sync,
            "broker": f"127.0.0.1:{self.site.port}" if self.site else None,
            "time": time.time(),
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
_ACTION = re.compile(r"^/api/devices/([^/]+)/([a-z-]+)$")


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
        elif m := _PREVIEW.match(path):
            dev = self.server.fleet.device(m[1])
            if dev is None:
                self._error(HTTPStatus.NOT_FOUND, f"no device {m[1]}")
            else:
                self._send(HTTPStatus.OK, "image/jpeg", dev.preview_jpeg())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # the action is in the path; the body is ignored
        path = self.path.split("?", 1)[0]
        m = _ACTION.match(path)
        if not m:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")
            return
        dev = self.server.fleet.device(m[1])
        if dev is None:
            self._error(HTTPStatus.NOT_FOUND, f"no device {m[1]}")
            return
        try:
            dev.act(m[2])
        except KeyError:
            self._error(HTTPStatus.BAD_REQUEST, f"unknown action {m[2]}")
            return
        body = json.dumps({"ok": True, "device": dev.id, "action": m[2]}).encode()
        self._send(HTTPStatus.OK, "application/json", body)

    def _static(self, name: str) -> None:
        if name not in STATIC_TYPES:
            self._error(HTTPStatus.NOT_FOUND, f"no file {name}")
            return
        self._send(HTTPStatus.OK, STATIC_TYPES[name], (STATIC / name).read_bytes())

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, "application/json", json.dumps({"error": message}).encode())

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
    if args.devices < 1:
        print("unbroken: error: --devices must be at least 1", file=sys.stderr)
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
        Fleet(workdir, args.devices, config, sync) as fleet,
        PanelServer(fleet, args.host, args.port) as server,
    ):
        print(
            f"panel: {server.url}  ({args.devices} device{'s' * (args.devices != 1)}, "
            f"sync {'on' if sync else 'off'}, workdir {workdir}; Ctrl-C stops)",
            flush=True,
        )
        stop.wait()
        print("stopping: closing sessions, stopping devices", flush=True)
    return 0


def add_parser(sim_subparsers: Any) -> None:
    """Register ``unbroken sim panel`` under the ``sim`` subcommands."""
    p = sim_subparsers.add_parser(
        "panel", help="a web page for a simulated fleet: buttons, LEDs, preview, log, sync"
    )
    p.add_argument("--devices", type=int, default=2, help="how many devices (default 2)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where devices (and the site) live; new or empty (default: a new temporary directory)",
    )
    p.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a local broker and store and sync every device (default: if Mosquitto "
        "is installed)",
    )
    p.add_argument("--config", type=Path, help="device.toml for every device")
    p.add_argument(
        "--explain-mode", choices=["auto", "button"], help="override continuity.explain_mode"
    )
    p.set_defaults(func=cmd_panel)

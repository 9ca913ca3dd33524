"""``unbroken sim panel``: a page in the browser for a simulated fleet.

The fleet (:class:`~simulator.fleet.Fleet`) is of live devices
(:class:`~simulator.live.LiveDevice`): each a :class:`~simulator.device.SimDevice`
stepping frames in real time on its own thread. The page shows, for each body recorder,
its record, marker and explain buttons, the recording LED (the gpiozero mock pin, and the
pattern the recorder asks for), battery, storage, network, GPS, clock, state, session and
officer, a live preview of the watermarked picture, the chain's latest entries and the
sync backlog. A click on record drives the record button's mock pin, exactly as the
switch would. A tester's buttons flip the switches the scenarios flip, as the control
channel does (:func:`~simulator.tester_buttons.button_command`): camera, microphone and GPS faults,
storage filled and given back, the network dropped and back, the clock stepped an hour
either way, the battery's level and external power, and a power cut (the disk stays as
the cut left it; power on boots again and seals the ``power_loss`` gap). Each body
recorder is worn by an officer: assigned by the agency with sync, from the settings
without (the configured badges, else 340201, 340202, ...).

An interview room (``--rooms``, :mod:`simulator.live_room`) is a room controller with its
room panel (door contact and key switch) and, with sync, the agency's case system (signed
``session_open``/``session_close`` commands). Its card shows the RECORDING lamp (the
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
import json
import logging
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.config import load_config
from simulator.fleet import Fleet, panel_config
from simulator.tester_buttons import ActionError

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("web")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


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
    from simulator.mosquitto import BrokerError, mosquitto_binary

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

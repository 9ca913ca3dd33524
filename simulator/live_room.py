"""An interview room for the panel: the room controller in real time (:class:`LiveRoom`),
its room panel as a tester works it (:class:`SimPanel`: door contact and key switch) and,
with sync, the agency's case system (:class:`CaseSystem`: signed ``session_open`` and
``session_close`` commands).

Example::

    room = LiveRoom(dev, uploader=None, panel=SimPanel(dev.recorder, None, None))
    room.start()
    room.act("door-close"); room.act("key-start")      # the door, confirmed by the key
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from agent.recorder import Recorder
from agent.sync import Uploader
from evidence.names import ProvisionError
from simulator.device import SimDevice
from simulator.live import LiveDevice
from simulator.previews import PREVIEW_WIDTH
from simulator.tester_buttons import ActionError, button_command

if TYPE_CHECKING:
    from common import mqtt
    from simulator.site import LocalSite

ROOM_EVENTS_SHOWN = 18  # per room: each segment is one entry per track
CAMERA_PREVIEW_WIDTH = 320  # a room's cameras, shown small beside the composite
CASE_BADGES = ("340102", "340177")  # the case system's officers, when the config names none
CASE_PERSON = "李某"  # the person interviewed, when the page names none


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

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.Message) -> None:
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
            "explain": lambda: self.control(button_command("explain", a)),
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

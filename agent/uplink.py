"""The device's MQTT v5 connection to the broker (TLS, client certificate, QoS 1).

paho's network thread runs the callbacks here, and they only queue what arrives for the
uploader thread (:mod:`agent.sync`) — except a room panel's input, handed to the recorder
at once — and count the publishes in flight, so that the uploader keeps within its window.

Example::

    link = Uplink(device_id, broker_settings(root), window=64)
    link.connect()
    kind, data = link.inbox.get()   # ("connected", None), ("message", msg), ...
    link.publish(p.up(device_id, "entry"), entry.to_json())
    link.close()
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.room import room_lacks
from agent.sync_replies import is_panel_input
from agent.sync_timing import PanelEcho
from common.link_log import LinkWatch
from common.mqtt import tls_client
from evidence import protocol as p
from evidence.messages import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to reach the broker (from the provisioning bundle)."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    agency_key: nacl.signing.VerifyKey


RoomOf = Callable[[], str | None]  # the room assigned now (None: none yet)


class Uplink:
    """One device's connection: ``inbox`` holds ``("connected", None)``,
    ``("disconnected", rc)``, ``("message", msg)`` and ``("room", None)`` (the window has
    room again), in the order they happened. A room controller also talks with its room's
    panel on it: ``room`` names the room, or says which is assigned now (a callable: an
    assignment that arrives at run time moves the panel topics with it)."""

    def __init__(
        self,
        device_id: str,
        broker: BrokerSettings,
        window: int,
        room: str | RoomOf | None = None,
        on_panel: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.broker = broker
        self.window = window
        self.room_of: RoomOf = room if callable(room) else (lambda: room)
        self.room: str | None = None  # the room whose panel topics this link serves
        self.lacks: str | None = None  # what the room controller lacks ("no room assigned…")
        self._room_known = False  # whether the room (or its lack) was told yet
        self.on_panel = on_panel
        self.panel = PanelEcho()
        self.connected = threading.Event()
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.refusals: list[str] = []  # what the broker refused, for status/tests
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self.client = self._make_client()
        if callable(room):  # a room controller, for sure: say now what it lacks
            self.follow_room()
        elif room is not None:
            self.room, self._room_known = room, True

    def connect(self) -> None:
        """Open the connection (again, after a ``close()``); paho retries."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        self.client.loop_start()

    def close(self) -> None:
        self.watch.quiet = True
        self.client.disconnect()
        self.client.loop_stop()
        self.watch.quiet = False

    def publish(
        self,
        topic: str,
        payload: bytes,
        user_properties: dict[str, str] | None = None,
        retain: bool = False,
    ) -> None:
        """QoS 1, counted in the window until the broker acknowledges it; MQTT v5 user
        properties beside the payload."""
        props = None
        if user_properties:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = list(user_properties.items())
        with self._inflight_lock:
            self._inflight += 1
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._inflight_lock:
                self._inflight = max(0, self._inflight - 1)

    def room_in_window(self) -> int:
        """How many more publishes the window takes now."""
        with self._inflight_lock:
            return max(0, self.window - self._inflight)

    def clear_window(self) -> None:
        """After a reconnect nothing is in flight any more."""
        with self._inflight_lock:
            self._inflight = 0

    def show_on_panel(self, state: str) -> None:
        """Thread-safe: what the room panel shows (retained: a panel that reconnects reads
        it at once). Called after every frame; sent when it changes, after a reconnect,
        and every few seconds (:class:`agent.sync_timing.PanelEcho`). A room controller
        with no room yet shows nothing, and says once what it lacks."""
        room = self.follow_room()
        if self.panel.show(state, time.monotonic(), self.connected.is_set()) and room:
            self._publish_panel(room, state)

    def follow_room(self) -> str | None:
        """The room assigned now; when it changed, the panel topics move to it (subscribed,
        and the panel shown at once) and the change is logged."""
        room = self.room_of()
        if room == self.room and self._room_known:
            return room
        old, self.room, self._room_known = self.room, room, True
        self.lacks = room_lacks(room)
        if self.lacks:
            log.warning("%s", self.lacks)
        else:
            log.info("serving room %s%s", room, f" (was {old})" if old else "")
        if old:
            self.client.unsubscribe([p.panel(old, "door"), p.panel(old, "key")])
        if room:
            self._subscribe_panel(room)
            self.panel.sent_at = -math.inf  # the new room's panel learns the state now
        return room

    # -- paho callbacks (network thread): only queue -------------------------------

    def _make_client(self) -> mqtt.Client:
        b = self.broker
        c = tls_client(self.device_id, b.ca, b.cert, b.key)
        c.will_set(
            p.up(self.device_id, "status"),
            Status(device=self.device_id, online=False).to_bytes(),
            qos=1,
            retain=True,
        )
        c.max_inflight_messages_set(self.window)
        self.watch = LinkWatch(c, log, b.host, b.port, min_delay=1, max_delay=15, cert=b.cert)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    def _on_connect(
        self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            self.refusals.append(f"connect: {rc}")
            self.watch.refused(rc, f"device {self.device_id}")
            return
        self.watch.connected()
        c.subscribe(p.reply(self.device_id, "#"), qos=1)
        c.subscribe(p.command(self.device_id, "#"), qos=1)
        room = self.room  # (the recorder's thread may move it meanwhile: it subscribes too)
        if room:
            self._subscribe_panel(room)
            if self.panel.state is not None:
                self._publish_panel(room, self.panel.state)
        self.inbox.put(("connected", None))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if is_panel_input(msg.topic, self.room):
            if self.on_panel is not None:  # the recorder decides, on its own thread
                self.on_panel(msg.topic.rsplit("/", 1)[-1], bytes(msg.payload))
            return
        self.inbox.put(("message", msg))

    def _subscribe_panel(self, room: str) -> None:
        self.client.subscribe([(p.panel(room, "door"), 1), (p.panel(room, "key"), 1)])

    def _publish_panel(self, room: str, state: str) -> None:
        self.client.publish(p.panel(room, "state"), state.encode(), qos=1, retain=True)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        self.watch.disconnected(rc)
        self.inbox.put(("disconnected", rc))

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._inflight_lock:
            self._inflight = max(0, self._inflight - 1)
        self.inbox.put(("room", None))  # wake the uploader: the window has room again
        if rc.is_failure:  # e.g. 135 Not authorized: the ACL refused the topic
            log.warning("broker refused a publish: %s (%d)", rc, rc.value)
            self.refusals.append(f"publish: {rc}")

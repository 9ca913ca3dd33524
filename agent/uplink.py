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

from agent.sync_plan import PanelEcho, is_panel_input
from common.mqtt import tls_client
from evidence import protocol as p

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


class Uplink:
    """One device's connection: ``inbox`` holds ``("connected", None)``,
    ``("disconnected", rc)``, ``("message", msg)`` and ``("room", None)`` (the window has
    room again), in the order they happened. A room controller (``room``) also talks with
    its room's panel on it."""

    def __init__(
        self,
        device_id: str,
        broker: BrokerSettings,
        window: int,
        room: str | None = None,
        on_panel: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.broker = broker
        self.window = window
        self.room = room
        self.on_panel = on_panel
        self.panel = PanelEcho()
        self.connected = threading.Event()
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.refusals: list[str] = []  # what the broker refused, for status/tests
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self.client = self._make_client()

    def connect(self) -> None:
        """Open the connection (again, after a ``close()``); paho retries."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

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
        and every few seconds (:class:`agent.sync_plan.PanelEcho`)."""
        if self.panel.show(state, time.monotonic(), self.connected.is_set()):
            self._publish_panel(state)

    # -- paho callbacks (network thread): only queue -------------------------------

    def _make_client(self) -> mqtt.Client:
        b = self.broker
        c = tls_client(self.device_id, b.ca, b.cert, b.key)
        c.will_set(
            p.up(self.device_id, "status"),
            p.dumps({"device": self.device_id, "online": False}),
            qos=1,
            retain=True,
        )
        c.max_inflight_messages_set(self.window)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    def _on_connect(
        self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            self.refusals.append(f"connect: {rc}")
            return
        log.info("connected to broker %s:%d (%s)", self.broker.host, self.broker.port, rc)
        c.subscribe(p.reply(self.device_id, "#"), qos=1)
        c.subscribe(p.command(self.device_id, "#"), qos=1)
        if self.room:
            c.subscribe(p.panel(self.room, "door"), qos=1)
            c.subscribe(p.panel(self.room, "key"), qos=1)
            if self.panel.state is not None:
                self._publish_panel(self.panel.state)
        self.inbox.put(("connected", None))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if is_panel_input(msg.topic, self.room):
            if self.on_panel is not None:  # the recorder decides, on its own thread
                self.on_panel(msg.topic.rsplit("/", 1)[-1], bytes(msg.payload))
            return
        self.inbox.put(("message", msg))

    def _publish_panel(self, state: str) -> None:
        assert self.room
        self.client.publish(p.panel(self.room, "state"), state.encode(), qos=1, retain=True)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        log.info("disconnected from broker: %s (%d)", rc, rc.value)
        self.inbox.put(("disconnected", rc))

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._inflight_lock:
            self._inflight = max(0, self._inflight - 1)
        self.inbox.put(("room", None))  # wake the uploader: the window has room again
        if rc.is_failure:  # e.g. 135 Not authorized: the ACL refused the topic
            log.warning("broker refused a publish: %s (%d)", rc, rc.value)
            self.refusals.append(f"publish: {rc}")

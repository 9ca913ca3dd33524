"""A store worker: the MQTT shell around :class:`store.ingest.Ingest`.

Workers of a group split a fleet by device, never by message (:mod:`store.pinning`): each
subscribes to the topics of the devices it serves, and, every heartbeat, takes over those
of a worker that died, or gives back those of one that came back. A device taken over is
told at once to send again what it had in flight (``unbroken/r/<dev>/resend``), rather
than finding out by silence. paho's network thread only queues what arrives, each device's
in its own queue (:mod:`store.fair_share`: a device over its share is told to back off, and
when the whole inbox is full the network thread waits, and the broker with it); one handler
thread takes a batch by turns between the devices — whole segments made durable together —
publishes the replies at QoS 1, and beats the heartbeat.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import nacl.signing
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.files import ConfigError
from common.link_log import LinkWatch
from common.mqtt import probe_cause, tls_client
from evidence import protocol as p
from evidence.messages import Rejected, Resend
from store import pinning
from store.blobs import FileBlobs
from store.config import StoreConfig
from store.db import Database
from store.delivery import Delivery
from store.directory import RegistryDirectory
from store.fair_share import FairInbox
from store.ingest import Ingest
from store.mailbox import Mailbox

log = logging.getLogger(__name__)

BACKLOG = 256  # messages queued before the network thread waits
# Messages one device may have waiting: more than any device's upload window, a small
# part of the whole, so a flood from one device leaves room for every other.
SHARE = 48
BATCH, BATCH_BYTES = 64, 64 * 1024 * 1024  # handled together at most
BUSY = "the store has {n} messages of this device waiting: back off, then send again"


class Worker:
    def __init__(
        self,
        config: StoreConfig,
        ingest: Ingest,
        devices: Callable[[], list[str]],
        delivery: Delivery,
    ) -> None:
        """``devices``: every registered device (asked every heartbeat)."""
        self.config = config
        self.ingest = ingest
        self.devices = devices
        self.delivery = delivery
        self.ready = threading.Event()
        self.handled = 0
        self.serves: set[str] = set()  # the devices this worker is subscribed for
        self._connected = threading.Event()
        self._beat_at = -math.inf
        self._inbox = FairInbox(SHARE, BACKLOG)
        self._told_busy: dict[str, float] = {}  # per device, when it was last told to back off
        self._handler = threading.Thread(target=self._handle, name="store-handler", daemon=True)
        self.problem: str | None = None  # why the broker is not reached, while it is not
        self.halted = threading.Event()  # another client took its session: it stopped
        b = config.broker
        c = tls_client(config.name, b.ca, b.cert, b.key)
        c.max_inflight_messages_set(64)
        self.watch = LinkWatch(c, log, b.host, b.port, 1, 10, quiet_take_over=True, cert=b.cert)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self.client = c

    def _on_connect(
        self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:  # logged with its disconnect, once
            self.problem = self.watch.refused(rc, f"store {self.config.name}").text
            return
        self.watch.connected()
        self.problem = None
        self.serves = set()  # a new connection has no subscriptions: the handler makes them
        self._beat_at = -math.inf
        self._connected.set()
        self._inbox.wake()  # subscribe now

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and retained_elsewhere(msg.topic):
            if not msg.payload:
                return  # a clearing (ours, delivered back): nothing to clear or handle
            # Only the status is the broker's to keep; anything else retained would sit in
            # its memory after the device left. An empty retained message deletes it.
            log.warning("cleared a retained message on %s", msg.topic[:200])
            c.publish(msg.topic, b"", qos=1, retain=True)
        device = device_of(msg.topic)
        if not self._inbox.put(device, (msg.topic, bytes(msg.payload), user_properties(msg))):
            self._busy(c, device, msg.topic)

    def _busy(self, c: mqtt.Client, device: str, topic: str) -> None:
        """Tell a device over its share to back off (``quota``), once a second at most: a
        flood is not answered message for message."""
        now = time.monotonic()
        if device and now - self._told_busy.get(device, -math.inf) >= 1.0:
            self._told_busy[device] = now
            text = BUSY.format(n=SHARE)
            c.publish(p.reply(device, "rejected"), Rejected.of(topic, "quota", text).to_bytes(), 1)

    def _handle(self) -> None:
        while True:
            got = self._inbox.take(BATCH, BATCH_BYTES, timeout=pinning.HEARTBEAT / 2)
            if got is None:
                return
            try:
                self._pin()
            except Exception as e:  # the database away: keep serving, beat again next time
                log.error("heartbeat failed: %s: %s", type(e).__name__, e)
            self.ingest.busy(self._inbox.overflow(), SHARE, time.time())
            batch = [m for m in got if m[0]]  # not the wake-ups
            if not batch:
                continue
            try:  # commands due to devices that came online; answers kept (store.delivery)
                batch, commands = self.delivery.take(batch, time.time())
                for topic, payload in commands:
                    self.client.publish(topic, payload, qos=1)
            except Exception as e:  # the mailbox away: evidence still goes to Ingest
                log.error("command delivery failed: %s: %s", type(e).__name__, e)
            try:
                replies = self.ingest.handle_many(batch, time.time()) if batch else []
            except Exception as e:  # Ingest refuses what it can; this is the last net
                log.error("failed on %d messages: %s: %s", len(batch), type(e).__name__, e)
                continue
            self.handled += len(batch)
            for topic, payload in replies:
                self.client.publish(topic, payload, qos=1)

    def _pin(self) -> None:
        """Every heartbeat: say this worker is alive, and serve the devices it should."""
        now = time.time()
        if not self._connected.is_set() or now - self._beat_at < pinning.HEARTBEAT:
            return
        self._beat_at = now
        beats = self.ingest.db.heartbeat(self.config.group, self.config.name, now)
        live = pinning.alive(beats, now)
        serves = pinning.assignment(self.config.name, self.devices(), live)
        take, give = sorted(serves - self.serves), sorted(self.serves - serves)
        if give:
            self.client.unsubscribe([p.up(d, "#") for d in give])
        if take:
            # retainAsPublished: the store sees which device messages were sent retained
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            self.client.subscribe([(p.up(d, "#"), options) for d in take])
            for d in take:  # what it had in flight went nowhere: send it again, now
                self.client.publish(p.reply(d, "resend"), Resend().to_bytes(), qos=1)
            log.info("serving %d devices (%d taken, %d given)", len(serves), len(take), len(give))
        self.serves = serves
        self.ready.set()

    def _on_disconnect(self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.ready.clear()
        self._connected.clear()
        cause = self.watch.disconnected(rc)
        if cause is None:
            return
        self.problem = cause.text
        if cause.kind == "taken_over":
            # Two workers under one name knock each other off every second: stop instead.
            self.problem = taken_over_problem(self.config.name, self.config.group)
            log.error("%s", self.problem)
            self.halted.set()
            self.watch.quiet = True
            c.loop_stop()  # from its own thread: paho ends its loop, reconnecting no more

    def start(self, probe_seconds: float = 10.0) -> None:
        """Refused (ConfigError) when a worker of this name is running already. The first
        connection is tried at once, so a wrong certificate, a refusal or an unreachable
        broker is told now (``problem``); after that paho keeps retrying."""
        b = self.config.broker
        self.check_name()
        self.watch.quiet = True
        who = f"store {self.config.name}"
        cause = probe_cause(self.client, b.host, b.port, 15, probe_seconds, who)
        self.watch.quiet = False
        self._handler.start()
        if cause:  # logged now; paho's retries for the same cause add nothing
            self.problem = self.watch.down(cause).text
            self.client.connect_async(b.host, b.port, keepalive=15)
        self.client.loop_start()

    def check_name(self) -> None:
        """A worker beating under this name in this group is running: this one must not
        (both would serve the same devices, and knock each other off the broker)."""
        group, name, db = self.config.group, self.config.name, self.ingest.db
        before = db.last_beat(group, name)
        if not pinning.maybe_running(before, time.time()):
            return
        time.sleep(pinning.HEARTBEAT * 1.5)  # a live worker beats meanwhile; a stopped one not
        after = db.last_beat(group, name)
        if problem := pinning.name_in_use(name, group, before, after, time.time()):
            raise ConfigError(problem)

    def stop(self) -> None:
        self.watch.quiet = True
        self.client.disconnect()
        self.client.loop_stop()
        self._inbox.close()  # the handler finishes what was queued, then ends
        self._handler.join(timeout=30)


def taken_over_problem(name: str, group: str) -> str:
    return (
        f"another client connects to the broker as {name} and takes this worker's session "
        f"over: is a second store worker named {name} running (group {group})? give each "
        "worker its own name in store.toml; this one stopped reconnecting"
    )


def user_properties(msg: mqtt.MQTTMessage) -> dict[str, str]:
    """A message's MQTT v5 user properties (the first of each name)."""
    pairs = getattr(msg.properties, "UserProperty", None) or []
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(str(name), str(value))
    return out


def device_of(topic: str) -> str:
    """The device a message is from, to queue it by ("?" for a topic naming none)."""
    try:
        return p.parse_up(topic)[0]
    except p.ProtocolError:
        return "?"


def retained_elsewhere(topic: str) -> bool:
    """Whether a device topic is one no device has business retaining (all but status)."""
    parts = topic.split("/")
    return len(parts) >= 4 and parts[:2] == [p.PREFIX, "d"] and parts[3:] != ["status"]


def start_worker(config: StoreConfig) -> Worker:
    """A worker with its own database connection and view of the agency registry."""
    from provisioning.agency import Agency
    from provisioning.agency_directory import REGISTRY

    if config.receipts is not None:
        key = nacl.signing.SigningKey(bytes.fromhex(config.receipts.key.read_text().strip()))
        certificate: bytes | None = config.receipts.certificate.read_bytes()
    else:  # an older installation: the agency key signs receipts (and could sign more)
        log.warning("no [receipts] key in the store configuration: signing with the agency key")
        key, certificate = Agency(config.agency).signing_key, None
    directory = RegistryDirectory(config.agency / REGISTRY)
    ingest = Ingest(
        Database.connect(config.database),
        FileBlobs(config.blobs),
        directory,
        key,
        config.name,
        config.limits,
        certificate,
    )
    delivery = Delivery(Mailbox(ingest.db), directory.device_keys, directory.revoked_at)
    worker = Worker(config, ingest, directory.devices, delivery)
    worker.start()
    return worker

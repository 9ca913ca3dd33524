"""The broker configuration against a real Mosquitto, over MQTT v5 with TLS client
certificates: who may connect, and who may publish and read what.

Mosquitto runs exactly as ``provision broker-config`` wrote it. If it is not installed
these tests fail (``make test`` installs it); they are never skipped.
"""

from __future__ import annotations

import argparse
import json
import queue
import shlex
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent import enrolment
from agent.device_cli import add_agent_parser
from common import pki
from common.mqtt import tls_client
from provisioning.agency import Agency
from provisioning.cli import add_provision_parser
from simulator.broker import Mosquitto, free_port, mosquitto_binary

TIMEOUT = 5.0
NOT_AUTHORIZED = 135


def run(command: str) -> None:
    parser = argparse.ArgumentParser(prog="unbroken")
    sub = parser.add_subparsers(dest="command", required=True)
    add_provision_parser(sub)
    add_agent_parser(sub)
    args = parser.parse_args(shlex.split(command))
    assert args.func(args) == 0


@dataclass(frozen=True)
class Creds:
    ca: Path
    cert: Path | None
    key: Path | None


@dataclass
class Fleet:
    """An agency with two body recorders, a room controller serving room 101, a store,
    panels for rooms 101 and 102, and the broker configuration for them."""

    root: Path
    port: int
    devices: dict[str, Path] = field(default_factory=dict)

    @property
    def agency(self) -> Path:
        return self.root / "agency"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def ca(self) -> Path:
        return self.broker_dir / "ca.pem"

    def device_id(self, name: str) -> str:
        return str(json.loads((self.devices[name] / "identity.json").read_text())["device_id"])

    def device(self, name: str) -> Creds:
        """The files `agent install` put on the device, as the uploader uses them."""
        broker = enrolment.broker_settings(self.devices[name])
        return Creds(broker.ca, broker.cert, broker.key)

    def store(self) -> Creds:
        return Creds(self.ca, self.root / "store" / "store.pem", self.root / "store" / "store.key")

    def panel(self, room: str) -> Creds:
        d = self.root / f"panel-{room}"
        return Creds(self.ca, d / "panel.pem", d / "panel.key.pem")

    def broker_config(self) -> None:
        run(
            f"provision broker-config --agency {self.agency} --out {self.broker_dir} "
            f"--port {self.port}"
        )


def build_fleet(root: Path) -> Fleet:
    mosquitto_binary()  # fail first, and clearly, where there is no broker
    fleet = Fleet(root, free_port())
    a = fleet.agency
    run(f"provision init-agency --dir {a} --broker 127.0.0.1:{fleet.port}")
    for name, role in (("a", "body_recorder"), ("b", "body_recorder"), ("r", "room_controller")):
        dev, req, bundle = root / name, root / f"{name}.req", root / f"{name}.bundle"
        run(f"agent keygen --data {dev} --out {req} --serial SN-{name} --role {role}")
        run(f"provision enroll {req} --agency {a} --out {bundle}")
        run(f"agent install {bundle} --data {dev}")
        fleet.devices[name] = dev
    cmd = root / "room.cmd"
    run(f"provision assign --agency {a} --device {fleet.device_id('r')} --room 101 --out {cmd}")
    run(f"agent apply {cmd} --data {fleet.devices['r']}")
    run(f"provision enroll-store --agency {a} --name main --out {root / 'store'}")
    for room in ("101", "102"):
        d = root / f"panel-{room}"
        run(f"provision enroll-panel --agency {a} --room {room} --out {d}")
        pki.panel_pem(d)
    fleet.broker_config()
    return fleet


def Broker(fleet: Fleet) -> Mosquitto:
    """``mosquitto -c DIR/mosquitto.conf`` exactly as ``provision broker-config`` wrote it."""
    return Mosquitto(
        fleet.broker_dir / "mosquitto.conf", fleet.port, log=fleet.root / "mosquitto.log"
    )


class Client:
    """A paho v5 client over TLS (agent.transport: TCP_NODELAY on), with bounded waits."""

    def __init__(self, client_id: str, creds: Creds, port: int) -> None:
        self.c = tls_client(client_id, creds.ca, creds.cert, creds.key)
        self.port = port
        self.connack: ReasonCode | None = None
        self.closed: Any = None
        self.ready = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.connack = rc
        self.ready.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.closed = rc
        self.ready.set()

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.acks[mid] = rc

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        self.subacks[mid] = rcs

    def connect(self) -> str:
        """'connected', or how the broker refused."""
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=10)
        except (ssl.SSLError, OSError) as e:
            return f"refused during the handshake: {e}"
        self.c.loop_start()
        self.ready.wait(TIMEOUT)
        if self.connack is not None and not self.connack.is_failure and self.closed is None:
            return "connected"
        return f"refused: connack={self.connack} disconnect={self.closed}"

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """The PUBACK reason code (QoS 1)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        deadline = time.monotonic() + TIMEOUT
        while mid not in self.acks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return int(self.acks[mid].value)

    def subscribe(self, topic: str) -> list[int]:
        mid = self.c.subscribe(topic, qos=1)[1]
        assert mid is not None
        deadline = time.monotonic() + TIMEOUT
        while mid not in self.subacks:
            assert time.monotonic() < deadline, f"no SUBACK for {topic}"
            time.sleep(0.01)
        return [int(rc.value) for rc in self.subacks[mid]]

    def received(self, wait: float = 1.0) -> list[tuple[str, bytes]]:
        out = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Broker]]:
    fleet = build_fleet(tmp_path_factory.mktemp("fleet"))
    broker = Broker(fleet).start()
    yield fleet, broker
    broker.stop()


@pytest.fixture
def connect(fleet: tuple[Fleet, Broker]) -> Iterator[Any]:
    """connect(client_id, creds) -> a connected Client; all closed at teardown."""
    clients: list[Client] = []

    def make(client_id: str, creds: Creds) -> Client:
        c = Client(client_id, creds, fleet[0].port)
        clients.append(c)
        result = c.connect()
        assert result == "connected", f"{client_id}: {result}\n{fleet[1].log_text()[-1500:]}"
        return c

    yield make
    for c in clients:
        c.close()


def test_the_configuration_is_what_broker_config_wrote(fleet: tuple[Fleet, Broker]) -> None:
    f, _ = fleet
    conf = (f.broker_dir / "mosquitto.conf").read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        f"listener {f.port} 127.0.0.1",
        "allow_anonymous false",
    ):
        assert line in conf.splitlines()
    assert f"crlfile {(f.broker_dir / 'crl.pem').resolve()}" in conf
    assert (f.broker_dir / "server.key").stat().st_mode & 0o777 == 0o600


def test_device_publishes_only_under_its_own_id(fleet: tuple[Fleet, Broker], connect: Any) -> None:
    f, _ = fleet
    a, b = f.device_id("a"), f.device_id("b")
    store = connect("store-main", f.store())
    assert store.subscribe("unbroken/d/#") == [1]
    dev = connect(a, f.device("a"))
    assert dev.publish(f"unbroken/d/{a}/status", b"mine") == 0
    assert (f"unbroken/d/{a}/status", b"mine") in store.received()
    assert dev.publish(f"unbroken/d/{b}/status", b"forged") == NOT_AUTHORIZED
    assert dev.publish(f"unbroken/c/{a}/assign") == NOT_AUTHORIZED  # only the agency commands
    assert dev.publish(f"unbroken/r/{a}/receipt") == NOT_AUTHORIZED  # only the store receipts
    assert dev.publish("unbroken/p/101/state") == NOT_AUTHORIZED  # not a room controller
    assert store.received(0.3) == []


def test_store_reads_every_device_and_answers_each(
    fleet: tuple[Fleet, Broker], connect: Any
) -> None:
    f, _ = fleet
    a, b = f.device_id("a"), f.device_id("b")
    store = connect("store-main", f.store())
    store.subscribe("$share/stores/unbroken/d/#")
    dev_a, dev_b = connect(a, f.device("a")), connect(b, f.device("b"))
    dev_a.subscribe(f"unbroken/r/{a}/#")
    dev_b.subscribe(f"unbroken/r/{a}/#")  # another device's replies: granted, never delivered
    dev_a.publish(f"unbroken/d/{a}/entry", b"1")
    dev_b.publish(f"unbroken/d/{b}/entry", b"2")
    got = sorted(store.received())
    assert got == sorted([(f"unbroken/d/{a}/entry", b"1"), (f"unbroken/d/{b}/entry", b"2")])
    assert store.publish(f"unbroken/r/{a}/ack", b"ok") == 0
    assert dev_a.received() == [(f"unbroken/r/{a}/ack", b"ok")]
    assert dev_b.received(0.3) == []
    assert store.publish("unbroken/d/store-main/entry") == NOT_AUTHORIZED
    assert store.publish("unbroken/p/101/state") == NOT_AUTHORIZED


def test_panel_touches_only_its_room(fleet: tuple[Fleet, Broker], connect: Any) -> None:
    f, _ = fleet
    r = f.device_id("r")
    controller = connect(r, f.device("r"))  # assigned to room 101
    controller.subscribe("unbroken/p/#")
    panel = connect("panel-101", f.panel("101"))
    panel.subscribe("unbroken/p/#")
    other = connect("panel-102", f.panel("102"))
    assert panel.publish("unbroken/p/101/state", b"open") == 0
    assert controller.received() == [("unbroken/p/101/state", b"open")]
    assert controller.publish("unbroken/p/101/session", b"recording") == 0
    assert ("unbroken/p/101/session", b"recording") in panel.received()
    assert panel.publish("unbroken/p/102/state") == NOT_AUTHORIZED
    assert panel.publish("unbroken/d/panel-101/entry") == NOT_AUTHORIZED
    assert panel.publish(f"unbroken/d/{r}/entry") == NOT_AUTHORIZED
    assert other.publish("unbroken/p/102/state", b"x") in (0, 16)  # 16: no subscribers
    seen = controller.received(0.3) + panel.received(0.3)
    assert [t for t, _ in seen if not t.startswith("unbroken/p/101/")] == []
    assert controller.publish("unbroken/p/102/session") == NOT_AUTHORIZED


def _refused(f: Fleet, client_id: str, creds: Creds) -> str:
    c = Client(client_id, creds, f.port)
    try:
        result = c.connect()
    finally:
        c.close()
    assert result != "connected", f"{client_id} was let in"
    return result


def test_clients_without_a_valid_certificate_are_refused(
    fleet: tuple[Fleet, Broker], tmp_path: Path
) -> None:
    f, broker = fleet
    a = f.device_id("a")
    _refused(f, a, Creds(f.ca, None, None))
    assert "peer did not return a certificate" in broker.log_text()

    # a certificate from another CA, for the same id and key
    other_ca_key, other_ca = pki.make_ca("Rogue", time.time())
    tls = pki.load_key(f.device("a").key.read_bytes(), "tls key")  # type: ignore[union-attr]
    rogue = pki.issue(other_ca_key, other_ca, tls.public_key(), a, "client", time.time(), 30)
    (tmp_path / "rogue.pem").write_bytes(pki.cert_pem(rogue))
    _refused(f, a, Creds(f.ca, tmp_path / "rogue.pem", f.device("a").key))

    # an expired certificate from the agency's own CA
    agency = Agency(f.agency)
    expired = pki.issue(agency.ca_key, agency.ca, tls.public_key(), a, "client", time.time(), 0)
    (tmp_path / "expired.pem").write_bytes(pki.cert_pem(expired))
    time.sleep(1.1)  # valid for no days: expired a second later
    assert time.time() > expired.not_valid_after_utc.timestamp()
    _refused(f, a, Creds(f.ca, tmp_path / "expired.pem", f.device("a").key))
    agency.close()


def test_revoked_device_is_refused_after_crl_and_reload(tmp_path: Path) -> None:
    """Its own fleet: revocation changes the registry and the broker."""
    f = build_fleet(tmp_path)
    broker = Broker(f).start()
    try:
        a, b = f.device_id("a"), f.device_id("b")
        before = Client(b, f.device("b"), f.port)
        assert before.connect() == "connected"
        before.close()
        run(f"provision revoke {b} --agency {f.agency} --reason stolen")
        f.broker_config()
        broker.reload()
        _refused(f, b, f.device("b"))
        assert "certificate verify failed" in broker.log_text()
        c = Client(a, f.device("a"), f.port)
        assert c.connect() == "connected"  # the others carry on
        c.close()
        # and after a restart, from the configuration alone
        broker.stop()
        broker.start()
        _refused(f, b, f.device("b"))
    finally:
        broker.stop()

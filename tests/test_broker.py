"""The broker configuration against a real Mosquitto, over MQTT v5 with TLS client
certificates: who may connect, and who may publish and read what.

Mosquitto runs exactly as ``provision broker-config`` wrote it. If it is not installed
these tests fail (``make test`` installs it); they are never skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import pki
from provisioning.agency import Agency
from simulator.mosquitto import Mosquitto
from tests.fixtures.fleet import Broker, Client, Creds, Fleet, build_fleet, run

pytestmark = pytest.mark.slow  # a real Mosquitto, and a fleet provisioned for it

NOT_AUTHORIZED = 135


@pytest.fixture
def connect(fleet: tuple[Fleet, Mosquitto]) -> Iterator[Any]:
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


def test_the_configuration_is_what_broker_config_wrote(fleet: tuple[Fleet, Mosquitto]) -> None:
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


def test_device_publishes_only_under_its_own_id(
    fleet: tuple[Fleet, Mosquitto], connect: Any
) -> None:
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
    fleet: tuple[Fleet, Mosquitto], connect: Any
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


def test_panel_touches_only_its_room(fleet: tuple[Fleet, Mosquitto], connect: Any) -> None:
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
    fleet: tuple[Fleet, Mosquitto], tmp_path: Path
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

    # an expired certificate from the agency's own CA: issued when the CA begins, for no days
    agency = Agency(f.agency)
    issued = agency.ca.not_valid_before_utc.timestamp()
    expired = pki.issue(agency.ca_key, agency.ca, tls.public_key(), a, "client", issued, 0)
    (tmp_path / "expired.pem").write_bytes(pki.cert_pem(expired))
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
        store = Client("store-main", f.store(), f.port)
        assert store.connect() == "connected" and store.subscribe("unbroken/d/#") == [1]
        assert before.publish(f"unbroken/d/{b}/status", b"live") == 0
        assert (f"unbroken/d/{b}/status", b"live") in store.received()
        run(f"provision revoke {b} --agency {f.agency} --reason stolen")
        f.broker_config()
        broker.reload()
        # the connection opened before the revocation is cut off from every topic
        assert before.publish(f"unbroken/d/{b}/status", b"after") == NOT_AUTHORIZED
        assert store.received(0.3) == []
        before.close()
        store.close()
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

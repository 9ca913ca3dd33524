"""Retained messages (issue 14): a device may retain its status, nothing else. Anything
else it publishes retained is cleared by the store, so the broker does not keep it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent import provisioned
from common.mqtt import tls_client
from evidence import protocol as p
from simulator.site import LocalSite
from store.config import load_store_config
from store.worker import retained_elsewhere

pytestmark = pytest.mark.slow  # a real Mosquitto and a store worker

# Devices are enrolled before the store starts: a worker subscribes to the devices it serves
# (store.pinning), those registered later from its next heartbeat.


def test_only_the_status_is_a_device_topic_to_retain() -> None:
    assert not retained_elsewhere(p.up("bwc-1", "status"))
    assert retained_elsewhere(p.up("bwc-1", "blob", "ab" * 32, "0"))
    assert retained_elsewhere(p.up("bwc-1", "entry"))
    assert not retained_elsewhere(p.panel("101", "state"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalSite]:
    with LocalSite(tmp_path / "site") as s:
        s.start_broker()
        yield s


def _client(site: LocalSite, data: Path, name: str) -> mqtt.Client:
    b = provisioned.broker_settings(data)
    c = tls_client(name, b.ca, b.cert, b.key)
    c.connect("127.0.0.1", site.port)
    c.loop_start()
    return c


def _retained(site: LocalSite, topic: str) -> list[bytes]:
    """What the broker still keeps retained on ``topic``: a store client subscribing now
    gets it."""
    got: list[bytes] = []
    done = threading.Event()
    b = load_store_config(site.store_config("9")).broker
    c = tls_client("store-9", b.ca, b.cert, b.key)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload)) if m.retain else None
    c.on_subscribe = lambda *_: done.set()
    c.connect("127.0.0.1", site.port)
    c.loop_start()
    site.start_broker()  # the ACL names store-9
    c.subscribe(topic, qos=1)
    done.wait(5)
    time.sleep(0.5)
    c.loop_stop()
    c.disconnect()
    return got


def test_a_device_retaining_a_chunk_has_it_cleared(site: LocalSite) -> None:
    data = site.provision_device("bwc-0007")
    site.start_store()
    dev = _client(site, data, "bwc-0007")
    topic = p.up("bwc-0007", "blob", hashlib.sha256(b"x").hexdigest(), "0")
    status = p.up("bwc-0007", "status")
    dev.publish(topic, b"\x00" * 100_000, qos=1, retain=True).wait_for_publish(5)
    dev.publish(status, p.dumps({"device": "bwc-0007"}), qos=1, retain=True).wait_for_publish(5)
    time.sleep(1.0)
    dev.loop_stop()
    dev.disconnect()
    assert _retained(site, topic) == []
    assert _retained(site, status) != []  # the status is the device's to retain


def test_a_clearing_is_not_cleared_again(site: LocalSite, caplog: pytest.LogCaptureFixture) -> None:
    data = site.provision_device("bwc-0008")
    site.start_store()
    dev = _client(site, data, "bwc-0008")
    topic = p.up("bwc-0008", "entry")
    with caplog.at_level("WARNING", logger="store.worker"):
        dev.publish(topic, b"{}", qos=1, retain=True).wait_for_publish(5)
        time.sleep(1.5)
    dev.loop_stop()
    dev.disconnect()
    cleared = [r for r in caplog.records if "cleared a retained message" in r.getMessage()]
    assert len(cleared) == 1  # the empty message it published came back, and stopped there

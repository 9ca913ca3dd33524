"""One device's flood never starves another: a worker's inbox is shared by turns between
devices, a device over its share is told to back off and counted, and refusals are
written a batch at a time. The inbox's rules without threads; then against a real
Mosquitto and store worker, a device flooding while another syncs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent import provisioned
from common.mqtt import tls_client
from evidence import protocol as p
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.fair_share import FairInbox
from tests.fixtures.config import small_config


def _msg(device: str, n: int, size: int = 10) -> tuple[str, bytes, dict[str, str]]:
    return (p.up(device, "entry"), bytes([n % 256]) * size, {})


def test_a_flood_waits_behind_itself_not_in_front_of_another_device() -> None:
    inbox = FairInbox(share=48, total=256)
    queued = [inbox.put("flood", _msg("flood", n)) for n in range(200)]
    assert queued.count(True) == 48  # its share; the rest counted, not queued
    assert inbox.overflow() == {"flood": 152} and inbox.overflow() == {}
    assert inbox.put("bwc-2", _msg("bwc-2", 1))
    batch = inbox.take(4, 10**9, timeout=0) or []
    # by turns: the flood's oldest, then the other device's, then the flood again
    assert [t.split("/")[2] for t, _, _ in batch] == ["flood", "bwc-2", "flood", "flood"]


def test_a_batch_stops_at_its_count_and_bytes_and_keeps_each_devices_order() -> None:
    inbox = FairInbox(share=10, total=100)
    for n in range(5):
        inbox.put("a", _msg("a", n, size=100))
        inbox.put("b", _msg("b", n, size=100))
    first = inbox.take(100, 250, timeout=0) or []
    assert len(first) == 3  # 300 bytes passes 250: the batch ends there
    rest = inbox.take(100, 10**9, timeout=0) or []
    a = [m[1][0] for m in first + rest if m[0].split("/")[2] == "a"]
    assert a == [0, 1, 2, 3, 4]
    assert inbox.take(100, 10**9, timeout=0) == []


def test_a_full_inbox_holds_the_network_thread_until_the_handler_takes() -> None:
    inbox = FairInbox(share=10, total=3)
    for d in "abc":
        inbox.put(d, _msg(d, 0))
    done = threading.Event()
    t = threading.Thread(target=lambda: (inbox.put("d", _msg("d", 0)), done.set()))
    t.start()
    assert not done.wait(0.3)  # waiting: the whole inbox is full
    assert len(inbox.take(1, 10**9, timeout=0) or []) == 1
    t.join(5)
    assert done.is_set()
    inbox.close()
    assert len(inbox.take(10, 10**9, timeout=0) or []) == 3
    assert inbox.take(10, 10**9, timeout=0) is None  # closed and empty: the handler ends


@pytest.mark.slow  # a real Mosquitto and store worker
def test_a_device_syncs_fully_while_another_floods(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        flooder = site.provision_device("bwc-flood")
        honest = site.provision_device("bwc-honest")
        site.start_broker()  # the ACL with both devices
        b = provisioned.broker_settings(flooder)
        client = tls_client("bwc-flood", b.ca, b.cert, b.key)
        client.connect("127.0.0.1", site.port)
        client.loop_start()
        stop = threading.Event()

        def flood() -> None:
            junk = b"{" * 100_000
            while not stop.is_set():
                client.publish(p.up("bwc-flood", "entry"), junk, qos=0)
                time.sleep(0.0005)

        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        try:
            dev = SimDevice(honest, small_config(prebuffer_seconds=1))
            dev.start()
            dev.run(1)
            dev.recorder.open_session()
            dev.run(4)
            dev.recorder.close_session()
            up = site.uploader(honest, dev.clock)
            up.start()
            assert up.wait_idle(120), "the honest device was not receipted during the flood"
            up.stop()
            dev.stop()
        finally:
            stop.set()
            flooding.join(10)
            client.loop_stop()
            client.disconnect()
        db = site.db()
        refused = db.query("select device, reason from rejections")
        assert not [r for r in refused if r["device"] == "bwc-honest"], refused[:3]
        assert any(r["device"] == "bwc-flood" for r in refused)
        segments = db.query(
            "select count(*) as n from entries where device = 'bwc-honest' and kind = 'segment'"
        )[0]["n"]
        receipts = db.query("select count(*) as n from receipts where device = 'bwc-honest'")[0][
            "n"
        ]
        assert segments > 0 and receipts == segments
        db.close()

"""Replies that change a device's state are the store's signed word: forged acks (from a
client holding a store host's TLS files, but not its receipt key) remove nothing from the
backlog or the 24-hour accounting, and once the real store answers every segment is
receipted. Against a real Mosquitto, store worker and uploader."""

from __future__ import annotations

import time
from pathlib import Path

import nacl.signing
import pytest

from agent.journal.sync_ledger import SyncLedger
from common.mqtt import tls_client
from evidence import protocol as p
from evidence.messages import Ack
from evidence.store_acks import sign_ack
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.config import load_store_config
from tests.fixtures.config import small_config

pytestmark = pytest.mark.slow  # a real Mosquitto, store worker and uploader


def test_forged_acks_remove_nothing_and_the_store_receipts_everything(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        data = site.provision_device("bwc-acks")
        config = load_store_config(site.store_config("1"))  # its TLS files: no worker yet
        site.start_broker()  # the ACL with the store's certificate
        dev = SimDevice(data, small_config(prebuffer_seconds=1))
        dev.start()
        dev.run(1)
        dev.recorder.open_session()
        dev.run(4)
        dev.recorder.close_session()
        up = site.uploader(data, dev.clock)
        up.start()
        assert up.connected.wait(10)
        ledger = SyncLedger(data)
        entries = ledger.unacked(1000)
        segments = ledger.unreceipted_count()
        assert segments > 0
        b = config.broker
        forger = tls_client("store-forger", b.ca, b.cert, b.key)
        forger.connect("127.0.0.1", site.port)
        forger.loop_start()
        stranger = nacl.signing.SigningKey.generate()  # not a key the agency certified
        for e in entries:
            refusal = Ack(seq=e.seq, ok=False, reason="forged", code="refused_entry")
            topic = p.reply("bwc-acks", "ack")
            forger.publish(topic, refusal.to_bytes(), qos=1).wait_for_publish(5)
            signed = sign_ack(stranger, refusal, device="bwc-acks", entry_hash=e.hash, store="1")
            forger.publish(topic, signed, qos=1).wait_for_publish(5)
        time.sleep(1)  # the uploader's thread reads them (nothing to wait on: they change nothing)
        forger.loop_stop()
        forger.disconnect()
        refused = ledger.db.execute("select count(*) from sync_refused").fetchone()[0]
        assert refused == 0 and ledger.unreceipted_count() == segments
        site.start_store()
        assert up.wait_idle(90)
        assert ledger.unreceipted_count() == 0 and ledger.unacked_count() == 0
        up.stop()
        dev.stop()
        ledger.close()

"""The store report keeps the device's own word (its last status, dated) apart from what
the store holds, and says when the device's backlog figure is already out of date."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.evidence_dir import load_chain
from common.settings import StorageLimits
from evidence.seal import Entry
from simulator.device import SimDevice
from store.db import Database
from store.report import build_report, format_report
from tests.fixtures.config import small_config


def test_backlog_is_the_devices_dated_word_not_the_stores(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'store.db'}")
    status = {"device": "bwc-1", "online": True, "backlog": {"blobs": 1, "bytes": 5}}
    with db.transaction():
        db.execute(
            "insert into statuses values (?, ?, ?)", ("bwc-1", json.dumps(status), 1773451800.0)
        )
        for i, at in enumerate((1773451700.0, 1773451900.0, 1773451901.0)):
            db.execute(
                "insert into receipts values (?, ?, ?, ?, ?)", ("bwc-1", f"{i:064x}", i, at, "{}")
            )
    report = build_report(db, 1773452000.0)
    device = report["devices"][0]
    assert device["receipted_since_status"] == 2
    text = format_report(report)
    assert "device status as reported 2026-03-14T01:30:00Z: online" in text
    assert "1 segment(s) / 5 B not yet uploaded" in text
    assert "the store has receipted 2 segment(s) since" in text
    db.close()


def test_footage_stored_in_the_clear_is_named(tmp_path: Path) -> None:
    """A test bench's device that recorded with encryption off is named at the top of the
    report and per session; an encrypting device is not."""
    db = Database.connect(f"sqlite:///{tmp_path / 'store.db'}")
    for name, encrypt in (("bench", False), ("bwc", True)):
        base = small_config(prebuffer_seconds=0)
        config = base.model_copy(update={"storage": StorageLimits(encrypt=encrypt)})
        dev = SimDevice(tmp_path / name, config)
        dev.start()
        dev.recorder.open_session()
        dev.run(4)
        dev.recorder.close_session()
        dev.stop()
        with db.transaction():
            for _, e in load_chain(tmp_path / name):
                assert isinstance(e, Entry)
                row = (name, e.seq, e.hash, e.payload["prev"], e.kind, e.session)
                at = e.payload["at"]["wall"]
                db.execute(
                    "insert into entries values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, at, e.to_json().decode(), at, None),
                )
    report = build_report(db, time.time())
    assert report["footage_in_the_clear"] == ["bench"]
    sessions = {d["device"]: d["sessions"] for d in report["devices"]}
    assert [s["in_the_clear"] for s in sessions["bench"] if s["segments"]] == [2]
    assert all(s["in_the_clear"] == 0 for s in sessions["bwc"])
    text = format_report(report)
    assert "FOOTAGE IN THE CLEAR (encryption turned off): bench" in text
    assert "2 IN THE CLEAR" in text
    db.close()

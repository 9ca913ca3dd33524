"""The store report keeps the device's own word (its last status, dated) apart from what
the store holds, and says when the device's backlog figure is already out of date."""

from __future__ import annotations

import json
from pathlib import Path

from store.db import Database
from store.report import build_report, format_report


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

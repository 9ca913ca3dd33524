"""The store report keeps the device's own word (its last status, dated) apart from what
the store holds, and says when the device's backlog figure is already out of date."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from common.archive.device_directory import load_chain
from common.settings import StorageLimits
from device.clock import SimClock
from evidence.seal import Entry
from simulator.device import SimDevice
from store.db import Database, DatabaseMissing
from store.report import build_report, format_report
from store.report_view import (
    SinceError,
    needing_attention,
    parse_since,
    since,
    summary,
    summary_line,
)
from tests.fixtures.config import small_config
from tests.fixtures.store import postgres_url
from unbroken.cli import main


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
    assert "UNREADABLE" not in text  # what a recorder seals reads whole
    db.close()


def _store_chain(db: Database, device: str, data: Path, skip: set[int]) -> None:
    """The device's chain as the store keeps it (entries ``skip`` never arrived)."""
    with db.transaction():
        for _, e in load_chain(data):
            assert isinstance(e, Entry)
            if e.seq in skip:
                continue
            row = (device, e.seq, e.hash, e.payload["prev"], e.kind, e.session)
            at = e.payload["at"]["wall"]
            db.execute(
                "insert into entries values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, at, e.to_json().decode(), at, None),
            )


def _two_devices(tmp_path: Path) -> Database:
    """bwc-a synced whole; bwc-b with entry 2 never received (a chain gap). Recorded ten
    minutes ago: nothing is overdue yet."""
    db = Database.connect(f"sqlite:///{tmp_path / 'store.db'}")
    for name, skip in (("bwc-a", set()), ("bwc-b", {2})):
        clock = SimClock(wall_start=time.time() - 600)
        dev = SimDevice(tmp_path / name, small_config(prebuffer_seconds=0), clock)
        dev.start()
        dev.recorder.open_session()
        dev.run(4)
        dev.recorder.close_session()
        dev.stop()
        _store_chain(db, name, tmp_path / name, skip)
    return db


def test_the_summary_counts_what_is_shown_and_filters_leave_out_the_rest(tmp_path: Path) -> None:
    db = _two_devices(tmp_path)
    now = float(db.query("select max(wall) as t from entries")[0]["t"]) + 60  # before overdue
    report = build_report(db, now)
    counts = summary(report)
    assert counts["devices"] == 2 and counts["sessions"] == 2
    assert counts["segments"] == sum(
        s["segments"] for d in report["devices"] for s in d["sessions"]
    )
    assert counts["segments"] >= 2 and counts["gaps_unexplained"] == 0
    assert counts["problems"] == 1  # bwc-b's missing entry
    assert format_report(report).splitlines()[-1] == summary_line(counts)
    assert summary_line(counts).startswith("Summary: 2 devices, 2 sessions, ")

    attention = needing_attention(report)
    assert [d["device"] for d in attention["devices"]] == ["bwc-b"]
    assert summary(attention)["devices"] == 1
    assert [d["device"] for d in build_report(db, now, device="bwc-a")["devices"]] == ["bwc-a"]

    assert [d["device"] for d in since(report, now - 3600)["devices"]] == ["bwc-a", "bwc-b"]
    later = since(report, now + 60)
    assert later["devices"] == [] and summary(later)["sessions"] == 0
    db.close()


@pytest.mark.parametrize(
    ("text", "back"),
    [("90m", 5400.0), ("24h", 86400.0), ("7d", 7 * 86400.0), ("1.5h", 5400.0)],
)
def test_since_takes_a_span_back_from_now(text: str, back: float) -> None:
    assert parse_since(text, 1_773_500_000.0) == 1_773_500_000.0 - back


def test_since_takes_an_iso_date_in_utc_unless_it_names_a_zone() -> None:
    assert parse_since("2026-03-14", 0.0) == 1773446400.0
    assert parse_since("2026-03-14T01:00", 0.0) == 1773450000.0
    assert parse_since("2026-03-14T02:00+01:00", 0.0) == 1773450000.0
    with pytest.raises(SinceError, match=r"'yesterday'.*24h"):
        parse_since("yesterday", 0.0)


def _store_toml(tmp_path: Path, database: str) -> Path:
    cfg = tmp_path / "store.toml"
    cfg.write_text(
        f'database = "{database}"\nblobs = "blobs"\nagency = "agency"\n'
        '[broker]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
    )
    return cfg


def test_a_misspelt_database_is_an_error_naming_it_not_a_new_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "stroe.db"
    cfg = _store_toml(tmp_path, f"sqlite:///{missing}")
    assert main(["store", "report", "--config", str(cfg)]) == 2
    assert f"{missing}: no such database file" in capsys.readouterr().err
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table x (y)").connection.close()
    cfg = _store_toml(tmp_path, f"sqlite:///{other}")
    assert main(["store", "report", "--config", str(cfg)]) == 2
    assert "not the store's database" in capsys.readouterr().err


def test_report_options_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_devices(tmp_path).close()
    cfg = _store_toml(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    base = ["store", "report", "--config", str(cfg)]
    assert main([*base, "--problems", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in doc["devices"]] == ["bwc-b"]
    assert doc["summary"]["devices"] == 1 and doc["shown"] == "only what needs attention"
    assert main([*base, "--since", "1d", "--device", "bwc-a"]) == 0
    out = capsys.readouterr().out
    assert "(sessions since 1d)" in out and "Device bwc-b" not in out
    assert out.splitlines()[-1].startswith("Summary: 1 device, 1 session, ")
    assert main([*base, "--device", "bwc-z"]) == 2
    assert "nothing of device 'bwc-z'; it knows bwc-a, bwc-b" in capsys.readouterr().err
    assert main([*base, "--since", "last week"]) == 2
    assert "--since 'last week': expected" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_database_opens_read_only_and_only_if_it_is_the_stores(
    kind: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}" if kind == "sqlite" else postgres_url()
    if kind == "sqlite":
        sqlite3.connect(tmp_path / "store.db").close()  # there, but empty
    with pytest.raises(DatabaseMissing, match="not the store's database"):
        Database.open_existing(url)
    Database.connect(url).close()
    db = Database.open_existing(url)
    assert db.query("select count(*) as n from entries") == [{"n": 0}]
    import psycopg

    with pytest.raises((sqlite3.Error, psycopg.Error), match=r"read.?only"):
        db.execute("insert into workers values ('g', 'w', 1.0)")
    db.close()

"""The store judges by what it saw (issue 14): revocation and the 24-hour rule by the
receive time, device clocks off the receive time and clocks going backwards flagged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nacl.signing

from evidence import protocol as p
from evidence.seal import Moment, Sealer
from evidence.verify import verify_chain
from evidence.verify_report import format_report as format_verify
from store.db import Database
from store.report import build_report, format_report
from tests.fixtures.store import DEV, NOW, _entry, _store, ack_of, segment_manifest

DAY = 86400.0


def _segment_body(sha: str, end: float) -> dict[str, object]:
    return segment_manifest(0, "segments/s1/000000.mp4", sha, 10, end - 2).to_body()


def test_revocation_is_judged_by_the_receive_time(db: Database, tmp_path: Path) -> None:
    ingest, sealer = _store(db, tmp_path)
    assert _entry(ingest, sealer.seal("marker", {}, Moment(NOW - 10, 1, True))) == ["ok"]
    ingest.directory.revoked[DEV] = NOW - 5  # type: ignore[attr-defined]
    # signed afterwards, back-dated by an hour: still received after the revocation
    backdated = sealer.seal("marker", {}, Moment(NOW - 3600, 2, True))
    replies = ingest.handle(p.up(DEV, "entry"), backdated.to_json(), NOW)
    (ack,) = [ack_of(b) for _, b in replies]
    assert not ack.ok and ack.code == "revoked" and "revoked" in ack.reason


def test_late_and_overdue_are_judged_in_the_store_time(db: Database, tmp_path: Path) -> None:
    ingest, _ = _store(db, tmp_path)
    behind = Sealer(nacl.signing.SigningKey.generate(), DEV, None)
    ingest.directory.keys[DEV].clear()  # type: ignore[attr-defined]
    ingest.directory.add(DEV, behind._key.verify_key)  # type: ignore[attr-defined]
    # the device clock 3 days behind: recorded and received within seconds
    skew = -3 * DAY
    at = Moment(NOW + skew, 1, True)
    sha = hashlib.sha256(b"seg").hexdigest()
    opened = behind.seal("session_open", {"category": "x", "badges": []}, at, "s1")
    seg = behind.seal("segment", _segment_body(sha, NOW + skew), at, "s1")
    for e in (opened, seg):
        assert _entry(ingest, e) == ["ok"]
    db.execute("insert into receipts values (?, ?, ?, ?, ?)", (DEV, sha, seg.seq, NOW + 5, "{}"))
    db.conn.commit()
    report = build_report(db, NOW + 10)
    (s,) = report["devices"][0]["sessions"]
    assert s["late"] == 0 and s["overdue"] == 0
    assert s["clock_skew"] == 3 * DAY
    assert "device clock +259200 s off the store's" in format_report(report)


def test_a_future_dated_entry_and_a_clock_going_back_are_flagged(
    db: Database, tmp_path: Path
) -> None:
    ingest, sealer = _store(db, tmp_path)
    ahead = Moment(NOW + 3 * DAY, 1, True)
    assert _entry(ingest, sealer.seal("boot", {"reason": "power_on"}, ahead)) == ["ok"]
    assert _entry(ingest, sealer.seal("boot", {"reason": "power_on"}, Moment(NOW, 1, True))) == [
        "ok"
    ]
    d = build_report(db, NOW)["devices"][0]
    assert d["flags"] == {"clock_backwards": 1, "future_dated": 1}
    assert "flagged: clock_backwards 1, future_dated 1" in format_report(build_report(db, NOW))


def test_verify_flags_a_wall_clock_going_back_across_a_boot() -> None:
    key = nacl.signing.SigningKey.generate()
    s = Sealer(key, DEV, None)
    entries = [
        s.seal("boot", {"reason": "power_on"}, Moment(NOW, 1, True)),
        s.seal("event", {"what": "gnss_lost"}, Moment(NOW + 5, 6, True)),
        s.seal("boot", {"reason": "power_on"}, Moment(NOW - DAY, 1, False)),
    ]
    report = verify_chain([(f"chain/{e.seq:010d}.json", e) for e in entries], key.verify_key, {})
    assert report.ok  # a reset clock is no tampering
    (n,) = report.notices
    assert n.code == "clock_backwards" and "86405 s" in n.message
    assert "NOTICE clock_backwards" in format_verify(report, "dir")

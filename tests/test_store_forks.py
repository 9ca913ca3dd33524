"""Forks (issue 14): a clone with the device's keys continues its chain. The store keeps
and receipts both branches — nothing signed by a registered key is thrown away — and
raises the fork in the report, naming both branches."""

from __future__ import annotations

import hashlib
from pathlib import Path

from evidence import protocol as p
from evidence.blob_messages import BlobInit
from evidence.receipt import check_receipt
from evidence.seal import Entry, Moment, Sealer
from store.db import Database
from store.ingest import Ingest
from store.report import build_report, format_report
from tests.fixtures.store import DEV, NOW, _store, ack_of, segment_manifest

CHUNK = 1024


def _segment(sealer: Sealer, data: bytes, i: int) -> Entry:
    sha = hashlib.sha256(data).hexdigest()
    manifest = segment_manifest(i, f"segments/s1/{i:06d}.mp4", sha, len(data), NOW)
    return sealer.seal("segment", manifest.to_body(), Moment(NOW, float(i), True), "s1")


def _upload(ingest: Ingest, e: Entry, data: bytes) -> list[tuple[str, bytes]]:
    sha = e.body["sha256"]
    chunks = tuple(
        hashlib.sha256(data[o : o + CHUNK]).hexdigest() for o in range(0, len(data), CHUNK)
    )
    init = BlobInit(sha256=sha, size=len(data), chunk_size=CHUNK, seq=e.seq, chunks=chunks)
    ingest.handle(p.up(DEV, "blob", "init"), init.to_bytes(), NOW)
    for o in range(0, len(data), CHUNK):
        ingest.handle(p.up(DEV, "blob", sha, str(o)), data[o : o + CHUNK], NOW)
    return ingest.handle(p.up(DEV, "blob", "finish"), p.dumps({"sha256": sha}), NOW)


def test_both_branches_of_a_fork_are_kept_receipted_and_alerted(
    db: Database, tmp_path: Path
) -> None:
    ingest, genuine = _store(db, tmp_path)
    head = genuine.seal("session_open", {"category": "x", "badges": []}, Moment(NOW, 0, True), "s1")
    clone = Sealer(genuine._key, DEV, head)  # the keys copied off the SD card
    entries_ok = []
    for e in [head] + [_segment(clone, b"clone %d" % i * 300, i) for i in range(1, 4)]:
        ((_, ack),) = ingest.handle(p.up(DEV, "entry"), e.to_json(), NOW)
        entries_ok.append(ack_of(ack).ok)
    # the genuine device comes back online with 4 new segments
    mine = [
        (_segment(genuine, b"genuine %d" % i * 300, i), b"genuine %d" % i * 300)
        for i in range(1, 5)
    ]
    receipted = 0
    for e, data in mine:
        ((_, ack),) = ingest.handle(p.up(DEV, "entry"), e.to_json(), NOW)
        assert ack_of(ack).ok, ack_of(ack)
        replies = _upload(ingest, e, data)
        assert [t.rsplit("/", 1)[-1] for t, _ in replies] == ["receipt"]
        r = check_receipt(replies[0][1], ingest.uploads.receipt_key.verify_key, device=DEV)
        assert r["entry_hash"] == e.hash
        receipted += 1
    assert all(entries_ok) and receipted == 4
    report = build_report(db, NOW)
    fork = report["devices"][0]["fork"]
    assert fork["seq"] == 2 and fork["alert"] == "this device's key is in two places"
    first, second = fork["branches"]
    assert (first["entries"], second["entries"]) == (3, 4)
    assert second["first"] == mine[0][0].hash and second["last_seq"] == 5
    text = format_report(report)
    assert "ALERT: this device's key is in two places" in text and mine[0][0].hash[:16] in text

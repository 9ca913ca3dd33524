"""The store's ingest throughput, with every check a device's upload goes through (bounds,
quotas, the chain, forks, chunk and blob hashes, receipts), beside a bare store doing the
same storage work in the same run: each segment's bytes hashed, written as a blob file,
fsynced, and one row committed, with no protocol and no checks.

Method: 40 segments of 2 MB in 256 KiB chunks, on SQLite in a temporary directory, through
``Ingest.handle`` (no broker); the best of 3 runs each.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from evidence import protocol as p
from evidence.manifest import UNKNOWN_LOCATION, Audio, SegmentManifest, Video
from evidence.seal import Moment, Sealer, key_id
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore
from store.db import Database
from store.ingest import Ingest

SEGMENTS, SIZE, CHUNK = 40, 2 * 1024 * 1024, 256 * 1024
DEVICE = "bwc-bench"


class _Directory:
    def __init__(self, key: nacl.signing.VerifyKey) -> None:
        self.keys = [RegisteredKey(key_id(key), key, 0.0, None)]

    def device_keys(self, device: str) -> list[RegisteredKey]:
        return self.keys if device == DEVICE else []

    def revoked_at(self, device: str) -> float | None:
        return None


def _segment(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (SIZE // 32)


def ingest_rate(tmp: Path) -> float:
    key = nacl.signing.SigningKey.generate()
    store = Ingest(
        Database.connect(str(tmp / "store.db")),
        BlobStore(tmp / "blobs"),
        _Directory(key.verify_key),
        nacl.signing.SigningKey.generate(),
        "store-bench",
    )
    sealer, now = Sealer(key, DEVICE, None), time.time()
    opened = sealer.seal("session_open", {"category": "inspection"}, Moment(now, 0, True), "s1")
    store.handle(p.up(DEVICE, "entry"), opened.to_json(), now)
    t0 = time.perf_counter()
    for i in range(SEGMENTS):
        data = _segment(i)
        sha = hashlib.sha256(data).hexdigest()
        manifest = SegmentManifest(
            index=i, file=f"segments/s1/{i:06d}.mp4", sha256=sha, size=len(data),
            start=Moment(now, 2.0 * i, True), end=Moment(now, 2.0 * (i + 1), True),
            video=Video("h264", 640, 360, 10, 1, 1_000_000, 20, 20 * i),
            audio=Audio("aac", 16000, 1, 32000), prebuffer_seconds=0,
            location=UNKNOWN_LOCATION, badges=[],
        )  # fmt: skip
        entry = sealer.seal("segment", manifest.to_body(), Moment(now, 2.0 * i, True), "s1")
        store.handle(p.up(DEVICE, "entry"), entry.to_json(), now)
        hashes = tuple(
            hashlib.sha256(data[o : o + CHUNK]).hexdigest() for o in range(0, len(data), CHUNK)
        )
        init = p.BlobInit(sha, len(data), CHUNK, entry.seq, hashes)
        store.handle(p.up(DEVICE, "blob", "init"), init.to_bytes(), now)
        for o in range(0, len(data), CHUNK):
            store.handle(p.up(DEVICE, "blob", sha, str(o)), data[o : o + CHUNK], now)
        out = store.handle(p.up(DEVICE, "blob", "finish"), p.dumps({"sha256": sha}), now)
        if not (out and out[0][0].endswith("receipt")):
            raise RuntimeError(f"segment {i} was not receipted: {out}")
    return SEGMENTS * SIZE / (time.perf_counter() - t0) / 1e6


def bare_rate(tmp: Path) -> float:
    db = sqlite3.connect(tmp / "bare.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table blobs (sha256 text primary key, size integer)")
    (tmp / "bare").mkdir()
    t0 = time.perf_counter()
    for i in range(SEGMENTS):
        data = _segment(i)
        sha = hashlib.sha256(data).hexdigest()
        with open(tmp / "bare" / sha, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with db:
            db.execute("insert into blobs values (?, ?)", (sha, len(data)))
    db.close()
    return SEGMENTS * SIZE / (time.perf_counter() - t0) / 1e6


def run(tmp: Path, line: Callable[[str, str, str, str, bool], None]) -> None:
    runs = []
    for n in range(3):
        d = tmp / f"ingest-{n}"
        d.mkdir()
        runs.append((ingest_rate(d), bare_rate(d)))
    checked, bare = max(r[0] for r in runs), max(r[1] for r in runs)
    print(
        f"# ingest: {SEGMENTS} segments of {SIZE >> 20} MB in {CHUNK >> 10} KiB chunks through "
        "Ingest.handle on SQLite, against hash + write + fsync + one row each; best of 3"
    )
    line(
        "store ingest, every check",
        f"{checked:.0f} MB/s",
        f"bare store {bare:.0f} MB/s ({checked / bare:.2f}x)",
        "(reported)",
        True,
    )

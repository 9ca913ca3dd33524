"""The store's ingest throughput, with every check a device's upload goes through (bounds,
quotas, the chain, forks, chunk and blob hashes, receipts), beside a bare store doing the
same storage work in the same run: each segment's bytes hashed, written as a blob file,
fsynced, and one row committed, with no protocol and no checks (the row a plain insert
through the store's own database layer, WAL and a synchronous commit as the store's).

Method: 80 segments of 512 KiB (a 2 s segment of 720p30 is about 0.4 MB), whole with their
manifest entries, 8 at a time through ``Ingest.handle_many`` as a worker takes them, and in
256 KiB chunks through ``Ingest.handle``; on SQLite in a temporary directory (no broker);
the best of 3 runs each.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from evidence import protocol as p
from evidence.blob_messages import BlobInit
from evidence.manifest import UNKNOWN_LOCATION, Audio, SegmentManifest, Video
from evidence.seal import Moment, Sealer, key_id
from evidence.session_bodies import SessionOpen
from provisioning.registry import RegisteredKey
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from store.rejections import record_refusal

SEGMENTS, SIZE, CHUNK, BATCH = 80, 512 * 1024, 256 * 1024, 8
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


def ingest_rate(tmp: Path, whole: bool) -> float:
    key = nacl.signing.SigningKey.generate()
    store = Ingest(
        Database.connect(str(tmp / "store.db")),
        FileBlobs(tmp / "blobs"),
        _Directory(key.verify_key),
        nacl.signing.SigningKey.generate(),
        "store-bench",
    )
    sealer, now = Sealer(key, DEVICE, None), time.time()
    body = SessionOpen("inspection", [], 0.0, []).to_body()
    opened = sealer.seal(SessionOpen.KIND, body, Moment(now, 0, True), "s1")
    store.handle(p.up(DEVICE, "entry"), opened.to_json(), now)
    t0, batch = time.perf_counter(), []
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
        entry = sealer.seal(manifest.KIND, manifest.to_body(), Moment(now, 2.0 * i, True), "s1")
        if whole:
            batch.append((p.up(DEVICE, "segment"), *p.whole_segment(entry.to_json(), data)))
            if len(batch) == BATCH or i == SEGMENTS - 1:
                out = store.handle_many(batch, now)
                if [t.rsplit("/", 1)[-1] for t, _ in out] != ["receipt"] * len(batch):
                    raise RuntimeError(f"segments to {i} were not all receipted: {out}")
                batch = []
            continue
        store.handle(p.up(DEVICE, "entry"), entry.to_json(), now)
        hashes = tuple(
            hashlib.sha256(data[o : o + CHUNK]).hexdigest() for o in range(0, len(data), CHUNK)
        )
        init = BlobInit(sha256=sha, size=len(data), chunk_size=CHUNK, seq=entry.seq, chunks=hashes)
        store.handle(p.up(DEVICE, "blob", "init"), init.to_bytes(), now)
        for o in range(0, len(data), CHUNK):
            store.handle(p.up(DEVICE, "blob", sha, str(o)), data[o : o + CHUNK], now)
        out = store.handle(p.up(DEVICE, "blob", "finish"), p.dumps({"sha256": sha}), now)
        if not (out and out[0][0].endswith("receipt")):
            raise RuntimeError(f"segment {i} was not receipted: {out}")
    return SEGMENTS * SIZE / (time.perf_counter() - t0) / 1e6


def bare_rate(tmp: Path) -> float:
    db = Database.connect(str(tmp / "bare.db"))
    (tmp / "bare").mkdir()
    t0 = time.perf_counter()
    for i in range(SEGMENTS):
        data = _segment(i)
        sha = hashlib.sha256(data).hexdigest()
        with open(tmp / "bare" / sha, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with db.transaction():
            record_refusal(db, DEVICE, f"blob {sha}", f"bare: {len(data)} B", time.time())
    db.close()
    return SEGMENTS * SIZE / (time.perf_counter() - t0) / 1e6


def run(tmp: Path, line: Callable[[str, str, str, str, bool], None]) -> None:
    runs = []
    for n in range(3):
        d = tmp / f"ingest-{n}"
        (d / "whole").mkdir(parents=True)
        (d / "chunked").mkdir()
        runs.append(
            (ingest_rate(d / "whole", True), ingest_rate(d / "chunked", False), bare_rate(d))
        )
    whole, chunked, bare = (max(r[i] for r in runs) for i in range(3))
    print(
        f"  method: {SEGMENTS} segments of {SIZE >> 10} KiB, whole ({BATCH} per batch) and in "
        f"{CHUNK >> 10} KiB chunks, every check, on SQLite; against hash + write + fsync + one "
        "row each; best of 3"
    )
    for name, rate in (("store ingest, whole segments", whole), ("store ingest, chunked", chunked)):
        line(
            name,
            f"{rate:.0f} MB/s",
            f"bare store {bare:.0f} MB/s ({rate / bare:.2f}x)",
            "(reported)",
            True,
        )

"""Reading evidence back (the archive layer, common/archive): what verifying and exporting
cost, each beside a baseline doing the same work in the same run.

- An hour of encrypted footage (recorded once by the simulated device, 640x360 at 15 fps,
  segments as the device cuts them): ``unbroken verify --evidence-key`` (hashes and
  packets), the same with ``--decode`` (every picture decoded), and ``unbroken export`` of
  the session, beside reading, hashing and decrypting the same files alone.
- ``unbroken store export`` of one 30 s session from a device whose chain holds tens of
  thousands of entries before it, beside the same session from a device with no other
  history; with the entries the export asked the store for.

Figures are CPU seconds of this process (``time.process_time``), the best of 3 runs.
``UNBROKEN_BENCH_HOUR_SECONDS`` and ``UNBROKEN_BENCH_HISTORY`` make the runs shorter.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from common.archive.archive import Named
from common.archive.device_directory import DeviceDirectory
from common.archive.export import export_session
from common.archive.verify import verify_archive
from common.recording_settings import Recording
from common.settings import DeviceConfig
from evidence.encryption import decrypt
from evidence.seal import key_id
from provisioning.registry import RegisteredKey
from simulator.device import SimDevice, stand_in_agency_key
from simulator.history import into_store, with_history
from store.archive import StoreArchive
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest

Line = Callable[[str, str, str, str, bool], None]
SMALL = Recording(width=640, height=360, fps=15, prebuffer_seconds=0)


def _cpu(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _record(root: Path, seconds: float) -> str:
    dev = SimDevice(root, DeviceConfig(recording=SMALL))
    dev.start()
    sid = dev.recorder.open_session()
    dev.run(seconds)
    dev.recorder.close_session()
    dev.run(0.2)
    dev.stop()
    return sid


def hour(tmp: Path, line: Line) -> None:
    seconds = float(os.environ.get("UNBROKEN_BENCH_HOUR_SECONDS", "3600"))
    root = tmp / "hour"
    sid = _record(root, seconds)
    agency = stand_in_agency_key(root)
    archive = DeviceDirectory(root)
    pin = archive.newest_key()
    files = sorted(p for p in (root / "segments").rglob("*.mp4"))
    size = sum(p.stat().st_size for p in files)

    def alone() -> None:
        for p in files:
            data = p.read_bytes()
            hashlib.sha256(data).hexdigest()
            decrypt(data, agency)

    base = _cpu(alone)
    verify = _cpu(lambda: verify_archive(DeviceDirectory(root), pin, evidence_key=agency))
    decoded = _cpu(
        lambda: verify_archive(DeviceDirectory(root), pin, evidence_key=agency, decode=True), 1
    )
    out = tmp / "hour-export"
    export = _cpu(
        lambda: export_session(
            DeviceDirectory(root), sid, out, pin, force=True, evidence_key=agency
        )
    )
    per_hour = 3600 / seconds
    print(
        f"  method: {seconds / 60:.0f} min recorded at 640x360@15, {len(files)} encrypted "
        f"segments, {size / 2**20:.0f} MiB; CPU s per hour of footage, best of 3 (decode: 1); "
        "baseline: reading, hashing and decrypting the same files alone"
    )
    alone_s = f"read+hash+decrypt {base * per_hour:.1f} s"
    line("verify --evidence-key, 1 h", f"{verify * per_hour:.1f} CPU-s", alone_s, "", True)
    line("verify --decode, 1 h", f"{decoded * per_hour:.1f} CPU-s", alone_s, "", True)
    line("export one session, 1 h", f"{export * per_hour:.1f} CPU-s", alone_s, "", True)


class _Registry:
    def __init__(self, device: str, key: nacl.signing.VerifyKey) -> None:
        self.device, self.keys = device, [RegisteredKey(key_id(key), key, 0.0, None)]

    def device_keys(self, device: str) -> list[RegisteredKey]:
        return self.keys if device == self.device else []

    def revoked_at(self, device: str) -> float | None:
        return None


class _Counted(StoreArchive):
    """The store's holdings, counting the entries handed to the export."""

    handed = 0

    def entries(self, first: int | None = None, last: int | None = None) -> list[Named]:
        got = super().entries(first, last)
        self.handed += len(got)
        return got


def long_history(tmp: Path, line: Line) -> None:
    history = int(os.environ.get("UNBROKEN_BENCH_HISTORY", "40000"))
    sid = _record(tmp / "thirty", 30)
    agency = stand_in_agency_key(tmp / "thirty")
    key = nacl.signing.SigningKey.generate()
    cost: dict[int, tuple[float, int, int]] = {}
    for n in (0, history):
        root = tmp / f"history-{n}"
        entries = with_history(tmp / "thirty", root, n, key)
        device = str(entries[0].payload["device"])
        registry = _Registry(device, key.verify_key)
        db = Database.connect(str(tmp / f"history-{n}.db"))
        ingest = Ingest(db, FileBlobs(tmp / f"blobs-{n}"), registry, key, "store-bench")
        into_store(ingest, entries, root, time.time())
        archive = _Counted(db, ingest.blobs, device, registry.keys, None)
        out = tmp / f"history-{n}-export"

        def export(a: StoreArchive = archive, o: Path = out) -> None:
            export_session(a, sid, o, force=True, evidence_key=agency)

        cpu = _cpu(export)
        cost[n] = (cpu, archive.handed // 3, len(entries))
        db.close()
    (short, read_short, all_short), (long, read_long, all_long) = cost[0], cost[history]
    print(
        f"  method: a 30 s session at 640x360@15 synced to a store (SQLite) after {history} "
        "other entries of its device; store export of it (verify its part of the chain, "
        "decrypt, mux, summary), best of 3; baseline: the same session with no history"
    )
    line(
        f"store export 30 s, {all_long} entries",
        f"{long:.2f} CPU-s, {read_long} read",
        f"no history: {short:.2f} CPU-s, {read_short} of {all_short} read",
        "~ no history",
        long <= 1.5 * short + 0.2,
    )


def run(tmp: Path, line: Line) -> None:
    long_history(tmp, line)
    hour(tmp, line)

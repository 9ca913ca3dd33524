"""Sync benchmarks (issue 4), against a real Mosquitto with TLS on loopback and a real
store worker, in one run:

- throughput from the device's journal to stored-and-receipted, as a ratio to plain paho
  QoS 1 publishing of the same bytes through the same broker (target >= 0.8);
- segment-closed-to-receipt latency, p50/p99, recording in real time;
- a fleet of devices each uploading a backlog to one store: aggregate throughput, nothing
  lost, everything verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import statistics
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.chain import ChainWriter
from agent.evidence_dir import segment_name
from agent.identity import load_identity
from agent.journal import Journal, SyncLedger
from agent.keys import load_or_create_key
from agent.sync import SyncSettings
from common.mqtt import tls_client
from common.settings import DeviceConfig, Recording
from device.clock import SimClock
from evidence.manifest import segment
from evidence.seal import Moment
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.config import load_store_config

Line = Callable[[str, str, str, str, bool], None]

SMALL = DeviceConfig(recording=Recording(width=640, height=360, fps=30, prebuffer_seconds=0))


def _record(
    data: Path, seconds: float, clock: SimClock | None = None, realtime: bool = False
) -> SimDevice:
    dev = SimDevice(data, SMALL, clock=clock, realtime=realtime)
    dev.start()
    dev.recorder.open_session()
    dev.run(seconds)
    dev.recorder.close_session()
    return dev


def _backlog_bytes(data: Path) -> list[Path]:
    return sorted((data / "segments").rglob("*.mp4"))


def plain_publish(site: LocalSite, files: list[Path], chunk: int) -> float:
    """Seconds to publish the files' bytes in chunks at QoS 1, every PUBACK received."""
    config = load_store_config(site.store_config("1"))
    b = config.broker
    client = tls_client("bench-baseline", b.ca, b.cert, b.key)
    client.max_inflight_messages_set(SyncSettings().window)  # as the uploader
    client.connect(b.host, site.port)
    client.loop_start()
    t = time.perf_counter()
    infos = []
    for f in files:
        data = f.read_bytes()
        for off in range(0, len(data), chunk):
            infos.append(
                client.publish("unbroken/r/bench/baseline", data[off : off + chunk], qos=1)
            )
    for i in infos:
        i.wait_for_publish(60)
    elapsed = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    return elapsed


def throughput(site: LocalSite, line: Line, source: Path, backlog_mb: int = 20) -> None:
    """A connected device whose journal suddenly holds a backlog (sealed at once), to
    stored-and-receipted; against publishing the same bytes with plain paho."""
    data = site.provision_device("bwc-bench-tp")
    settings = SyncSettings()
    up = site.uploader(data, SimClock(wall_start=time.time()), settings)
    up.start()
    assert up.connected.wait(10)
    size = _clone_backlog(source, data, backlog_mb * 1_000_000)
    t = time.perf_counter()
    done = up.wait_idle(300)
    elapsed = time.perf_counter() - t
    up.stop()
    base = plain_publish(site, _backlog_bytes(data), settings.chunk_size)
    ratio = base / elapsed
    mb = size / 1e6
    line(
        "sync throughput (receipted)",
        f"{mb / elapsed:.1f} MB/s ({mb:.0f} MB)",
        f"plain QoS1 publish {mb / base:.1f} MB/s",
        ">= 0.8x",
        done and ratio >= 0.8,
    )
    line(
        "sync / plain publish",
        f"{ratio:.2f}x",
        "same bytes, broker, run",
        ">= 0.8x",
        done and ratio >= 0.8,
    )


def latency(site: LocalSite, line: Line) -> None:
    data = site.provision_device("bwc-bench-lat")
    clock = SimClock(wall_start=time.time())
    dev = SimDevice(data, SMALL, clock=clock, realtime=True)
    up = site.uploader(data, clock)
    dev.start()
    up.start()
    dev.recorder.open_session()
    dev.run(20)
    dev.recorder.close_session()
    dev.stop()
    up.wait_idle(60)
    up.stop()
    ledger = SyncLedger(data)
    rows = ledger.db.execute(
        "select r.received - json_extract(e.entry, '$.payload.at.wall') as lag"
        " from receipts r join entries e on e.seq = r.seq"
    ).fetchall()
    ledger.close()
    lags = sorted(float(r["lag"]) * 1e3 for r in rows)
    p50, p99 = statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    line(
        "segment closed to receipt",
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        f"{len(lags)} segments, real time",
        "",
        True,
    )


def _clone_backlog(source: Path, data: Path, target_bytes: int) -> int:
    """Seal copies of real segments into ``data``'s own chain, signed with its own key,
    until the backlog holds ``target_bytes``: a device that was offline for a while."""
    identity = load_identity(data)
    assert identity
    journal = Journal(data)
    chain = ChainWriter(journal, load_or_create_key(data), identity.device_id, SimClock())
    src_journal = Journal(source)
    segs = [segment(e) for e in src_journal.entries("segment")]
    src_journal.close()
    sid = f"backlog-{identity.device_id}"
    mono, wall = 1.0, time.time() - 3600
    chain.seal("boot", {"software": "bench"}, at=Moment(wall, mono, True))
    chain.seal(
        "session_open", {"category": "inspection", "badges": []}, sid, Moment(wall, mono, True)
    )
    total, i = 0, 0
    while total < target_bytes:
        src = segs[i % len(segs)]
        rel = segment_name(sid, i)
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        # A trailing MP4 'free' box naming the copy: still a valid file, and every blob
        # of the fleet distinct, as real footage is.
        tag = f"{identity.device_id}/{i}".encode()
        media = (source / src.file).read_bytes() + struct.pack(">I4s", 8 + len(tag), b"free") + tag
        (data / rel).write_bytes(media)
        copy = dataclasses.replace(
            src, index=i, file=rel, size=len(media), sha256=hashlib.sha256(media).hexdigest()
        )
        mono += 2
        chain.seal_body(copy, sid, Moment(wall + mono, mono, True))
        total += len(media)
        i += 1
    chain.seal("session_close", {"segments": i}, sid, Moment(wall + mono, mono, True))
    journal.close()
    return total


def fleet(site: LocalSite, line: Line, source: Path, devices: int, backlog_mb: int) -> None:
    datas = [site.provision_device(f"bwc-fleet-{n:03d}") for n in range(devices)]
    site.start_broker()  # reload the ACL with the new devices
    total = sum(_clone_backlog(source, d, backlog_mb * 1_000_000) for d in datas)
    clock = SimClock(wall_start=time.time())
    ups = [site.uploader(d, clock) for d in datas]
    t = time.perf_counter()
    for u in ups:
        u.start()
    results = [False] * len(ups)

    def wait(i: int) -> None:
        results[i] = ups[i].wait_idle(900)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(ups))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    for u in ups:
        u.stop()
    db = site.db()
    stored = db.query(
        "select count(*) as n, sum(b.size) as bytes from receipts r"
        " join blobs b on b.sha256 = r.sha256 and b.device = r.device"
        " where r.device like 'bwc-fleet-%'"
    )
    db.close()
    expected = sum(len(list(Journal(d).entries("segment"))) for d in datas)
    ok = all(results) and stored[0]["n"] == expected
    line(
        f"fleet {devices} x {backlog_mb} MB to one store",
        f"{total / 1e6 / elapsed:.1f} MB/s aggregate",
        f"{total / 1e6:.0f} MB in {elapsed:.0f} s, {stored[0]['n']}/{expected} receipted",
        "all verified",
        ok,
    )


def run(tmp: Path, line: Line) -> None:
    devices = int(os.environ.get("UNBROKEN_BENCH_FLEET", "50"))
    backlog = int(os.environ.get("UNBROKEN_BENCH_BACKLOG_MB", "20"))
    with LocalSite(tmp / "site") as site:
        site.start_broker()
        site.start_store_processes(2)
        source = site.provision_device("bwc-bench-src")
        dev = SimDevice(source, DeviceConfig())  # 1280x720@30: real segment sizes
        dev.start()
        dev.recorder.open_session()
        dev.run(30)
        dev.recorder.close_session()
        dev.stop()
        throughput(site, line, source, backlog_mb=200)  # long enough to measure the rate
        latency(site, line)
        fleet(site, line, source, devices, backlog)

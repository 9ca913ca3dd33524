"""Sync benchmarks (issue 4), against a real Mosquitto with TLS on loopback and a real
store worker, in one run:

- throughput of a backlog sealed before anything starts, from the uploader's start to
  stored-and-receipted, as a ratio to a real QoS 1 subscriber receiving every byte of the
  same backlog through the same broker and TLS (target >= 0.8);
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
from typing import Any

from agent.chain import ChainWriter
from agent.identity import load_identity
from agent.journal.chain_index import Journal
from agent.journal.sync_ledger import SyncLedger
from agent.keys import load_or_create_key
from common import pki, topics
from common.mqtt import tls_client
from common.recording_settings import Recording
from common.settings import DeviceConfig, Sync
from device.clock import SimClock
from evidence.entries import Boot
from evidence.layout import segment_name
from evidence.manifest import segment
from evidence.seal import Moment
from evidence.session_bodies import SessionClose, SessionOpen
from simulator.device import SimDevice
from simulator.site import LocalSite

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


def subscriber_baseline(site: LocalSite, files: list[Path], settings: Sync) -> float:
    """Seconds for the files' bytes, published as the uploader sends them (a file up to
    the whole limit in one QoS 1 message, a larger one in chunks; the same window, and
    as the uploader awaits receipts, no more than ``parallel_blobs`` files ahead of what
    the subscriber has), to be received, every byte, by a real QoS 1 subscriber through
    the same TLS broker: the least any transfer through this broker can take.
    A panel's topic, on which no store worker listens (two connections, one certificate)."""
    room = "bench"
    d = site.workdir / "panels" / room
    if not (d / "panel.json").exists():
        site.enroll_panel(room)
    cert, key = pki.panel_pem(d)
    ca = site.agency.root / "ca.pem"
    topic = f"{topics.PANELS}/{room}/bench"
    total = sum(f.stat().st_size for f in files)
    got, done, subscribed = [0], threading.Event(), threading.Event()
    moved = threading.Condition()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        with moved:
            got[0] += len(msg.payload)
            moved.notify()
        if got[0] >= total:
            done.set()

    sub = tls_client("bench-subscriber", ca, cert, key)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", site.port)
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(10), "the baseline's subscription was not granted"
    pub = tls_client("bench-publisher", ca, cert, key)
    pub.max_inflight_messages_set(settings.window)
    pub.connect("127.0.0.1", site.port)
    pub.loop_start()
    t, ahead = time.perf_counter(), settings.parallel_blobs
    sent: list[int] = []  # bytes published, to the end of each file
    for f in files:
        data = f.read_bytes()
        with moved:  # no more files ahead of the subscriber than the uploader has
            moved.wait_for(lambda: len(sent) < ahead or got[0] >= sent[-ahead], 600)
        chunk = len(data) if len(data) <= settings.whole_limit else settings.chunk_size
        for off in range(0, len(data), chunk):
            pub.publish(topic, data[off : off + chunk], qos=1)
        sent.append((sent[-1] if sent else 0) + len(data))
    received = done.wait(600)
    elapsed = time.perf_counter() - t
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    assert received, f"the subscriber got {got[0]} of {total} bytes"
    return elapsed


def throughput(site: LocalSite, line: Line, source: Path, backlog_mb: int = 200) -> None:
    """A device whose journal holds a whole backlog before anything starts (sealed while
    it was offline) connects and syncs it: from the uploader's start to every segment
    stored and receipted. Against a real subscriber receiving the same bytes."""
    data = site.provision_device("bwc-bench-tp")
    settings = Sync()
    size = _clone_backlog(source, data, backlog_mb * 1_000_000)
    up = site.uploader(data, SimClock(wall_start=time.time()), settings)
    t = time.perf_counter()
    up.start()
    done = up.wait_idle(900)
    elapsed = time.perf_counter() - t
    up.stop()
    base = subscriber_baseline(site, _backlog_bytes(data), settings)
    ratio = base / elapsed
    mb = size / 1e6
    print(
        f"  method: a {mb:.0f} MB backlog sealed before the uploader starts, timed from its "
        "start (connection included) to the last receipt; baseline: the same bytes in the "
        "same messages, window and files ahead, QoS 1, to a real subscriber through the same TLS "
        "broker"
    )
    line(
        "sync throughput (receipted)",
        f"{mb / elapsed:.1f} MB/s ({mb:.0f} MB)",
        f"real subscriber {mb / base:.1f} MB/s",
        ">= 0.8x",
        done and ratio >= 0.8,
    )
    line(
        "sync / real subscriber",
        f"{ratio:.2f}x",
        "same bytes, broker, TLS, run",
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
    lags = sorted(lag * 1e3 for lag in ledger.receipt_lags())
    ledger.close()
    # A p99 needs 100 samples: fewer, and the worst is printed as what it is.
    tail = "p99" if len(lags) >= 100 else "worst"
    worst = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if tail == "p99" else lags[-1]
    print("  method: sealed segment's time to its receipt at the device, recording in real time")
    line(
        "segment closed to receipt",
        f"p50 {statistics.median(lags):.0f} ms, {tail} {worst:.0f} ms",
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
    chain.seal_body(Boot(software="bench"), at=Moment(wall, mono, True))
    opened = SessionOpen("inspection", [], 0.0, sorted({s.track_name for s in segs}))
    chain.seal_body(opened, sid, Moment(wall, mono, True))
    total, i, tracks = 0, 0, dict.fromkeys(opened.tracks, 0)
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
        tracks[copy.track_name] += 1
        i += 1
    chain.seal_body(SessionClose(i, tracks), sid, Moment(wall + mono, mono, True))
    journal.close()
    return total


def fleet(site: LocalSite, line: Line, source: Path, devices: int, backlog_mb: int) -> None:
    datas = [site.provision_device(f"bwc-fleet-{n:03d}") for n in range(devices)]
    site.start_broker()  # reload the ACL with the new devices
    total = sum(_clone_backlog(source, d, backlog_mb * 1_000_000) for d in datas)
    clock = SimClock(wall_start=time.time())
    ups = [site.uploader(d, clock) for d in datas]
    t, wall0 = time.perf_counter(), time.time()
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
    at = sorted(
        r["stored_at"] - wall0
        for r in db.query("select stored_at from receipts where device like 'bwc-fleet-%'")
    )
    db.close()
    expected = sum(len(list(Journal(d).entries("segment"))) for d in datas)
    ok = all(results) and stored[0]["n"] == expected
    if at:
        t90, t100 = at[max(0, int(len(at) * 0.9) - 1)], at[-1]
        print(f"  method: receipts' store times from the uploaders' start, {len(at)} segments")
        line(
            "fleet: all receipted / 90 %",
            f"{t100:.1f} s / {t90:.1f} s",
            f"{t100 / t90:.2f}x the time of 90 %",
            "<= 1.5x",
            t100 <= 1.5 * t90,
        )
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
        throughput(site, line, source)
        latency(site, line)
        fleet(site, line, source, devices, backlog)

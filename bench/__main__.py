"""Recording benchmarks (issue 2): trigger latency, pre-buffer coverage, sealing throughput,
watermark cost, pipeline speed on one core, and the recording agent's peak memory; sync
(issue 4, bench/sync.py); interview rooms (issue 6, bench/room.py); the media pipeline's
cost per stage (issue 12, bench/pipeline.py); power cuts (issue 5, bench/power.py); reading
evidence back: verify and export (bench/reading.py).

Each line prints the figure, its baseline from this same run, and the target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from agent.chain import open_chain
from agent.watermark import Watermark, find_font
from bench import ingest as ingest_bench
from bench import pipeline as pipeline_bench
from bench import power as power_bench
from bench import reading as reading_bench
from bench import room as room_bench
from bench import sync as sync_bench
from common.archive.device_directory import load_chain
from common.recording_settings import Recording
from common.settings import DeviceConfig
from device import yuv
from device.clock import SimClock
from device.controls import RECORD_PRESS
from evidence.manifest import segment
from evidence.seal import Entry
from simulator.device import SimDevice

HD = Recording(width=1280, height=720, fps=30)


def line(name: str, value: str, baseline: str, target: str, ok: bool) -> None:
    print(f"{name:<34} {value:<22} {baseline:<34} target {target:<12} {'OK' if ok else 'MISS'}")


def _timeit(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def trigger_latency(tmp: Path, samples: int = 120) -> None:
    """From the press edge on the record button's pin (a mock pin driven low, at a random
    moment) to the first frame recorded into the opened session, with frames paced in real
    time at 720p30 in their own thread, as on the device."""
    import random
    import threading

    cfg = DeviceConfig(recording=Recording(width=1280, height=720, fps=30, prebuffer_seconds=2))
    dev = SimDevice(tmp / "trigger", cfg, realtime=True)
    rec = dev.recorder
    pressed_at = [0.0]
    written: list[float] = []
    events: list[float] = []
    record, post = rec.frames.record, rec.post

    def timed_record(*args: object, **kwargs: object) -> None:
        record(*args, **kwargs)  # type: ignore[arg-type]
        if rec.session is not None and len(written) < len(events):
            written.append(time.perf_counter() - pressed_at[0])

    def timed_post(event: str) -> None:
        if event == RECORD_PRESS:
            events.append(time.perf_counter() - pressed_at[0])
        post(event)

    rec.frames.record = timed_record  # type: ignore[method-assign]
    dev.controls._on_event = timed_post
    dev.start()
    loop = dev.frame_loop()
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    pin = dev.pins.pin(cfg.controls.record_pin)
    rng = random.Random(3)
    time.sleep(2.5)  # the pre-event buffer fills
    for _ in range(samples):
        time.sleep(rng.uniform(0.05, 0.15))  # any phase of the frame interval
        pressed_at[0] = time.perf_counter()
        pin.drive_low()
        time.sleep(0.12)
        pin.drive_high()
        deadline = time.monotonic() + 2
        while len(written) < len(events) and time.monotonic() < deadline:
            time.sleep(0.005)
        rec.post(rec.close_session)  # closed on the recorder's thread, between frames
        while rec.session is not None and time.monotonic() < deadline + 2:
            time.sleep(0.01)
    loop.stop()
    runner.join(10)
    dev.stop()
    n = len(written)
    p50, p99 = _percentile(written, 0.5) * 1e3, _percentile(written, 0.99) * 1e3
    d50, d99 = _percentile(events, 0.5) * 1e3, _percentile(events, 0.99) * 1e3
    print(
        f"  method: press edge (mock pin) to the first frame recorded in the session, frames "
        f"paced at 30 fps in their own thread, {n} presses at random phases; baseline: the "
        "same edge to the press reaching the recorder (told at its first edge: no session open)"
    )
    line(
        "trigger to recording p50/p99",
        f"{p50:.1f}/{p99:.1f} ms",
        f"press told {d50:.1f}/{d99:.1f} ms",
        "p99 <= 50 ms",
        n >= 100 and p99 <= 50,
    )


def _intervals(tmp: Path, background: bool, seconds: float) -> tuple[list[float], list[float]]:
    """Frame-to-frame intervals (ms) recording 720p30 in real time: those across a segment's
    close, and all the others."""
    import threading

    cfg = DeviceConfig(recording=Recording(width=1280, height=720, fps=30, prebuffer_seconds=0))
    # the baseline (not background): closing and sealing on the frame loop's thread
    dev = SimDevice(
        tmp / f"intervals-{background}", cfg, realtime=True, seal_in_background=background
    )
    rec = dev.recorder
    stamps: list[float] = []
    closes: list[float] = []
    record, closed = rec.frames.record, rec.frames.segments._closed

    def timed_record(*args: object, **kwargs: object) -> None:
        record(*args, **kwargs)  # type: ignore[arg-type]
        stamps.append(time.perf_counter())

    def timed_closed(*args: object, **kwargs: object) -> None:
        closes.append(time.perf_counter())
        closed(*args, **kwargs)  # type: ignore[arg-type]

    rec.frames.record = timed_record  # type: ignore[method-assign]
    rec.frames.segments._closed = timed_closed  # type: ignore[method-assign]
    dev.start()
    rec.open_session()
    loop = dev.frame_loop()
    runner = threading.Thread(target=loop.run, kwargs={"seconds": seconds}, daemon=True)
    runner.start()
    runner.join(seconds + 30)
    rec.close_session()
    dev.stop()
    across: list[float] = []
    other: list[float] = []
    for a, b in itertools.pairwise(stamps):
        (across if any(a <= c < b for c in closes) else other).append((b - a) * 1e3)
    return across, other


def frame_intervals(tmp: Path, seconds: float = 30) -> None:
    """Closing a segment (media fsync, rename, entry file, journal row; the journal on the
    same disk) never delays a frame: the frame intervals across closes, the device's way
    (sealed on the chain's own thread), beside the same run sealing on the frame thread."""
    nominal = 1000 / 30
    base_across, _ = _intervals(tmp, False, seconds)
    across, other = _intervals(tmp, True, seconds)
    every = across + other
    p99 = _percentile(every, 0.99)
    print(
        f"  method: 720p30 paced in real time, {seconds:.0f} s each way, "
        f"{len(every)} intervals, {len(across)} across a segment's close; baseline: the same "
        "with closing and sealing on the frame thread"
    )
    line(
        "frame interval p99 / across close",
        f"{p99:.1f} / worst {max(across, default=0):.1f} ms",
        f"on frame thread: worst {max(base_across, default=0):.1f} ms",
        f"p99 <= {1.5 * nominal:.0f} ms",
        len(every) >= 100 and p99 <= 1.5 * nominal,
    )


def prebuffer_coverage(tmp: Path) -> None:
    cfg = DeviceConfig(recording=Recording(width=640, height=360, fps=30, prebuffer_seconds=30))
    dev = SimDevice(tmp / "prebuffer", cfg)
    dev.start()
    dev.run(40)
    opened = dev.clock.monotonic()
    dev.recorder.open_session()
    dev.run(1)
    dev.recorder.close_session()
    dev.stop()
    first = next(
        e for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry) and e.kind == "segment"
    )
    covered = opened - segment(first).start.mono
    line(
        "pre-buffer coverage",
        f"{covered:.1f} s before trigger",
        "configured 30 s",
        ">= 30 s",
        covered >= 30,
    )


def sealing(tmp: Path) -> None:
    """Sealing a segment as the recorder does, durably: its SHA-256 (computed as the muxer
    writes it), the signed manifest written to ``chain/`` (temporary file, fsync, rename,
    fsync of the directory) and its journal row (SQLite, synchronous=FULL). Against plain
    SHA-256 of the same bytes, and against the disk's own fsync (the physical floor)."""
    root = tmp / "prebuffer"
    manifest = next(e for _, e in load_chain(root) if isinstance(e, Entry) and e.kind == "segment")
    sealed = segment(manifest)
    data = (root / sealed.file).read_bytes()
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    sealer_dir = tmp / "sealing"
    sealer_dir.mkdir()
    floor_file = tmp / "fsync-floor"

    with open_chain(
        sealer_dir, nacl.signing.SigningKey.generate(), "bwc-bench", SimClock()
    ) as chain:

        def seal() -> None:
            h = hashlib.sha256()
            for c in chunks:
                h.update(c)
            chain.seal_body(dataclasses.replace(sealed, sha256=h.hexdigest()), "s")

        def plain() -> None:
            hashlib.sha256(data).hexdigest()

        def fsync() -> None:
            with open(floor_file, "wb") as f:
                f.write(b"x" * 1024)
                f.flush()
                os.fsync(f.fileno())

        n = 100
        cost = statistics.median(_timeit(seal, 1) for _ in range(n))
        base = statistics.median(_timeit(plain, 1) for _ in range(n))
        floor = statistics.median(_timeit(fsync, 1) for _ in range(n))
    print(
        f"  method: median of {n} seals of a {len(data) // 1024} KiB segment, each hashed, "
        "signed, written to chain/ and the journal durably, one after another"
    )
    line(
        "seal per segment, durable",
        f"{cost * 1e3:.2f} ms",
        f"sha256 alone {base * 1e3:.2f} ms",
        "",
        True,
    )
    line(
        "sealing throughput / sha256",
        f"{base / cost:.2f}x",
        f"one fsync of 1 KiB {floor * 1e3:.2f} ms",
        "",
        True,
    )


TAIL = ("警号 012345", "设备 bwc-1")


def watermark_cost() -> None:
    wm = Watermark(1280, 720, find_font(None))
    frame = yuv.blank(1280, 720)
    texts = [
        (f"2026-03-14 09:30:{s:02d} UTC+08:00", "时钟已同步", "31.820603N 117.227213E", *TAIL)
        for s in range(60)
    ]
    n = [0]

    def apply() -> None:  # a new text every 30 frames, as at 30 fps
        wm.apply(frame, texts[(n[0] // 30) % 60])
        n[0] += 1

    def copy() -> None:
        frame[: wm.strip_height] = frame[-wm.strip_height :]

    cost = min(_timeit(apply, 900) for _ in range(3))
    base = min(_timeit(copy, 900) for _ in range(3))
    line(
        "watermark per 1280x720 frame",
        f"{cost * 1e3:.3f} ms",
        f"strip copy {base * 1e3:.3f} ms",
        "<= 0.5 ms",
        cost <= 0.5e-3,
    )


def pipeline(tmp: Path) -> None:
    """Simulated camera + watermark + x264/AAC + sealing, pinned to one core."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cfg = DeviceConfig(
        recording=Recording(width=1280, height=720, fps=30, prebuffer_seconds=0, encoder_threads=1)
    )
    dev = SimDevice(tmp / "pipeline", cfg)
    dev.start()
    dev.recorder.open_session()
    seconds = 20
    t = time.perf_counter()
    dev.run(seconds)
    elapsed = time.perf_counter() - t
    dev.recorder.close_session()
    dev.stop()
    speed = seconds / elapsed
    line(
        "pipeline 1280x720@30, one core",
        f"{speed:.2f}x real time",
        f"{seconds} s of footage in {elapsed:.1f} s",
        ">= 2x",
        speed >= 2,
    )


def _max_rss_mb(cmd: list[str]) -> float:
    """A command's own peak RSS, measured by GNU time from a small parent: a child forked
    from this (large) bench process would start with this process's pages counted."""
    done = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss %M", *cmd], check=True, capture_output=True, text=True
    )
    last = done.stderr.strip().splitlines()[-1]
    return int(last.removeprefix("maxrss ")) / 1024


def peak_rss(tmp: Path) -> None:
    """A whole recording agent process: `unbroken sim session` at 1280x720@30, 20 s."""
    if not Path("/usr/bin/time").exists():
        line("peak RSS of recording agent", "not measured", "needs GNU time", "<= 150 MB", False)
        return
    session = ["sim", "session", "--seconds", "20", "--data", str(tmp / "rss")]
    rss = _max_rss_mb([sys.executable, "-m", "unbroken.cli", *session])
    imports = "import agent.recorder, av, numpy"
    base = _max_rss_mb([sys.executable, "-c", imports])
    line(
        "peak RSS of recording agent",
        f"{rss:.0f} MB",
        f"imports alone {base:.0f} MB",
        "<= 150 MB",
        rss <= 150,
    )


def main() -> None:
    print(f"{'figure':<34} {'value':<22} {'baseline (same run)':<34} target")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trigger_latency(tmp)
        frame_intervals(tmp)
        prebuffer_coverage(tmp)
        sealing(tmp)
        watermark_cost()
        peak_rss(tmp)
        power_bench.run(tmp, line)
        sync_bench.run(tmp, line)
        ingest_bench.run(tmp, line)
        reading_bench.run(tmp, line)
        room_bench.run(tmp, line)
        pipeline(tmp)  # last: these pin this process to one core
        pipeline_bench.run(tmp, line)


if __name__ == "__main__":
    main()

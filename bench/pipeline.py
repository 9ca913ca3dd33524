"""What one second of 720p30 footage costs on one core, stage by stage (issue 12).

Stages, as the recorder runs them: *capture + watermark* (the camera's frame, the
watermark's fields, the strip burned into the planes), *encode* (H.264 and AAC, the
encoders that run across segments), and *the rest of the frame loop* (muxing into
segment files, hashing them as they are written, sealing, the microphone and GNSS).

Two measures: CPU time of each stage inside a real recording (thread CPU time around the
recorder's own calls), and instructions per frame under callgrind (repeatable on a shared
machine; the difference between runs of two lengths, so start-up cancels out). Baselines
in the same run: the same encoder fed the same pictures as RGB, converted to YUV on the
way in (what the recorder did before its pipeline went YUV end to end), and a bare copy of
each picture (the least any capture can cost).

Run alone: ``python -m bench.pipeline`` (``--no-callgrind`` for the CPU times only).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import nacl.public
import numpy as np

from agent.capture import Capture
from agent.media import SegmentSink, TrackEncoder
from common.recording_settings import Recording
from common.settings import DeviceConfig, StorageLimits
from device import yuv
from device.camera import SimCamera
from device.clock import SimClock
from evidence.encryption import Encryptor
from simulator.device import SimDevice

HD = Recording(width=1280, height=720, fps=30, prebuffer_seconds=0, encoder_threads=1)
Line = Callable[[str, str, str, str, bool], None]
# A Pi Zero 2 W: four Cortex-A53 at 1 GHz. In-order cores: about 0.8 instructions a cycle
# on this kind of code (an assumption, stated with the figure).
ZERO2W_HZ, ZERO2W_IPC = 1.0e9, 0.8


class _Stages:
    """Thread CPU time spent inside wrapped calls, per stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {"capture": 0.0, "encode": 0.0}

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[stage] += time.thread_time() - t

        return timed


@contextmanager
def _timed_encoder(stages: _Stages) -> Iterator[None]:
    original = TrackEncoder.encode
    TrackEncoder.encode = stages.wrap("encode", original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        TrackEncoder.encode = original  # type: ignore[method-assign]


def stage_cpu(tmp: Path, seconds: float = 10, encrypt: bool = True) -> dict[str, float]:
    """CPU seconds per second of footage for each stage, recording a session on one core."""
    config = DeviceConfig(recording=HD, storage=StorageLimits(encrypt=encrypt))
    dev = SimDevice(tmp / f"stages-{encrypt}", config)
    stages = _Stages()
    cap = dev.recorder.capture
    for name in ("read", "label", "pictures_of"):
        setattr(cap, name, stages.wrap("capture", getattr(cap, name)))
    dev.start()
    dev.recorder.open_session()
    dev.run(1)  # encoders warmed up, first segment begun
    base = dict(stages.cpu)
    with _timed_encoder(stages):
        t = time.thread_time()
        dev.run(seconds)
        total = time.thread_time() - t
    dev.recorder.close_session()
    dev.stop()
    out = {k: (v - base[k]) / seconds for k, v in stages.cpu.items()}
    out["rest"] = total / seconds - out["capture"] - out["encode"]
    out["total"] = total / seconds
    return out


def encryption_cpu(tmp: Path, seconds: float = 10) -> float:
    """CPU seconds per second of 720p30 footage spent encrypting it as it is written: a
    session recorded in the clear, its segments' bytes fed through the recorder's sink."""
    config = DeviceConfig(recording=HD, storage=StorageLimits(encrypt=False))
    dev = SimDevice(tmp / "clear", config)
    dev.start()
    dev.recorder.open_session()
    dev.run(seconds)
    dev.recorder.close_session()
    dev.stop()
    files = sorted((tmp / "clear" / "segments").rglob("*.mp4"))
    agency = nacl.public.PrivateKey.generate().public_key
    spent = 0.0
    for i, f in enumerate(files):
        data = f.read_bytes()
        t = time.thread_time()
        sink = SegmentSink(tmp / f"enc-{i}.mp4", agency)
        for k in range(0, len(data), 4096):  # the muxer's writes are small too
            sink.write(data[k : k + 4096])
        sink.close_and_sync()
        spent += time.thread_time() - t
    plain = SegmentSink(tmp / "plain.mp4")  # the same sink writing in the clear
    t = time.thread_time()
    for f in files:
        data = f.read_bytes()
        for k in range(0, len(data), 4096):
            plain.write(data[k : k + 4096])
    plain.close_and_sync()
    return max(0.0, spent - (time.thread_time() - t)) / seconds


def encryption_throughput(seconds_of_footage: int = 60) -> tuple[float, float]:
    """MB/s of encrypting 1-second fragments of 720p30 footage (2 Mbit/s) to the agency,
    and of plain SHA-256 over the same bytes, on one core."""
    fragment = np.random.default_rng(1).integers(0, 256, HD.video_bitrate // 8, np.uint8)
    data = fragment.tobytes()
    agency = nacl.public.PrivateKey.generate().public_key
    t = time.thread_time()
    enc = Encryptor(agency)
    for i in range(seconds_of_footage):
        enc.record(data, i, i)
    encrypt = time.thread_time() - t
    t = time.thread_time()
    for _ in range(seconds_of_footage):
        hashlib.sha256(data).digest()
    sha = time.thread_time() - t
    mb = len(data) * seconds_of_footage / 1e6
    return mb / encrypt, mb / sha


def _pictures(n: int) -> list[np.ndarray]:
    clock = SimClock()
    cam = SimCamera(HD.width, HD.height, HD.fps, clock)
    return [cam.read().image for _ in range(n)]


def baseline_cpu(frames: int = 150) -> dict[str, float]:
    """CPU seconds per second of footage: the encoder on the same pictures given as YUV and
    as RGB (converted on the way in), and a bare copy of each picture."""
    pictures = _pictures(30)
    rgbs = [yuv.to_rgb(p) for p in pictures]
    silence = np.zeros(HD.audio_rate // HD.fps, np.int16)
    out = {}
    for name, images, fmt in (("encode_yuv", pictures, None), ("encode_rgb", rgbs, "rgb24")):
        enc = TrackEncoder(HD, HD.video_bitrate)
        _encode_loop(enc, images, silence, 30, fmt)  # warm up
        t = time.thread_time()
        _encode_loop(enc, images, silence, frames, fmt)
        out[name] = (time.thread_time() - t) / frames * HD.fps
        enc.close()
    t = time.thread_time()
    for i in range(frames):
        pictures[i % 30].copy()
    out["copy"] = (time.thread_time() - t) / frames * HD.fps
    return out


def _encode_loop(
    enc: TrackEncoder, images: list[np.ndarray], silence: np.ndarray, n: int, fmt: str | None
) -> None:
    for i in range(n):
        image = images[i % len(images)]
        if fmt is None:
            enc.encode(image, silence, keyframe=i % HD.fps == 0)
        else:  # the old path: RGB in, converted to YUV 4:2:0 by the encoder's input
            frame = av.VideoFrame.from_ndarray(image, format=fmt).reformat(format="yuv420p")
            picture = np.asarray(frame.to_ndarray(), np.uint8)
            enc.encode(picture, silence, keyframe=i % HD.fps == 0)


# -- instructions per frame (callgrind) ---------------------------------------------------


def run_stage(stage: str, frames: int) -> None:
    """One stage for ``frames`` frames: what callgrind counts (``--stage``)."""
    if stage == "capture":
        cfg = DeviceConfig(recording=HD)
        clock = SimClock()
        cam = SimCamera(HD.width, HD.height, HD.fps, clock)
        cap = Capture(cfg, {"main": cam}, "bwc-027-4f1c9a2e7d")
        dev = SimDevice(Path(tempfile.mkdtemp()), cfg, clock=clock)
        for _ in range(frames):
            got, failed = cap.read(clock.monotonic())
            fields = cap.label(clock, dev.gnss.state(), got["main"].captured, ["012345"], None)
            cap.pictures_of(got, failed, fields)
            clock.advance(1 / HD.fps)
    elif stage in ("encode_yuv", "encode_rgb"):
        pictures = _pictures(8)
        images = pictures if stage == "encode_yuv" else [yuv.to_rgb(p) for p in pictures]
        enc = TrackEncoder(HD, HD.video_bitrate)
        silence = np.zeros(HD.audio_rate // HD.fps, np.int16)
        _encode_loop(enc, images, silence, frames, None if stage == "encode_yuv" else "rgb24")
    elif stage == "record":
        root = Path(tempfile.mkdtemp())
        dev = SimDevice(root, DeviceConfig(recording=HD))
        dev.start()
        dev.recorder.open_session()
        dev.frame_loop().run(frames=frames)
        dev.recorder.close_session()
        dev.stop()
        shutil.rmtree(root)
    else:
        raise SystemExit(f"unknown stage {stage!r}")


def instructions(stage: str, frames: int) -> int:
    """Instructions (user space) callgrind counts for ``stage`` over ``frames`` frames."""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={d}/cg.out",
                sys.executable,
                "-m",
                "bench.pipeline",
                "--stage",
                stage,
                "--frames",
                str(frames),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"OPENBLAS_NUM_THREADS": "1"},
        ).stderr
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise RuntimeError(f"callgrind printed no count:\n{out[-2000:]}")
    return int(match.group(1))


def per_frame(stage: str, short: int = 10, long: int = 40) -> float:
    """Instructions per frame: two runs' difference, so start-up and imports cancel out."""
    return (instructions(stage, long) - instructions(stage, short)) / (long - short)


def run(tmp: Path, line: Line, callgrind: bool = True) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cpu = stage_cpu(tmp)
    base = baseline_cpu()
    method = "thread CPU time inside a 10 s 720p30 session, one core"
    print(f"  method: {method}; baselines encode the same pictures in the same run")
    pct = {k: v * 100 for k, v in cpu.items()}
    not_encoder = pct["capture"] + pct["rest"]
    line(
        "capture + watermark, % of a core",
        f"{pct['capture']:.1f} %",
        f"bare picture copy {base['copy'] * 100:.1f} %",
        "",
        True,
    )
    line(
        "encode (x264 + AAC), % of a core",
        f"{pct['encode']:.1f} %",
        f"same pictures as RGB {base['encode_rgb'] * 100:.1f} %",
        "",
        True,
    )
    line(
        "segment+hash+seal+audio, % core",
        f"{pct['rest']:.1f} %",
        f"whole loop {pct['total']:.1f} %",
        "",
        True,
    )
    line(
        "all but the encoder, % of a core",
        f"{not_encoder:.1f} %",
        f"encoder alone (YUV) {base['encode_yuv'] * 100:.1f} %",
        "< 10 %",
        not_encoder < 10,
    )
    enc_cpu = encryption_cpu(tmp)
    enc_mbs, sha_mbs = encryption_throughput()
    print(
        "  method: a 10 s session's segments, recorded in the clear, encrypted again through "
        "the recorder's sink (fragment cutting and all), thread CPU time, one core"
    )
    line(
        "encryption at rest, CPU",
        f"{enc_cpu * 100:.3f} % of a core",
        f"whole pipeline {cpu['total'] * 100:.1f} % of a core",
        "< 5 % of it",
        enc_cpu < 0.05 * cpu["total"],
    )
    line(
        "encryption throughput, one core",
        f"{enc_mbs:.0f} MB/s",
        f"SHA-256 of the same bytes {sha_mbs:.0f} MB/s",
        "",
        True,
    )
    if not callgrind or shutil.which("valgrind") is None:
        line("instructions per frame", "not measured", "needs valgrind", "", False)
        return
    print("  method: callgrind instructions, (40 frames - 10 frames) / 30, 1280x720")
    ins = {s: per_frame(s) for s in ("capture", "encode_yuv", "encode_rgb", "record")}
    rest = ins["record"] - ins["capture"] - ins["encode_yuv"]
    for name, stage, baseline in (
        ("capture + watermark, instr/frame", ins["capture"], ""),
        ("encode, instructions per frame", ins["encode_yuv"], f"RGB in {ins['encode_rgb']:,.0f}"),
        ("rest of the loop, instr/frame", rest, f"whole loop {ins['record']:,.0f}"),
    ):
        line(name, f"{stage:,.0f}", baseline, "", True)
    # The estimate: the same instruction counts on the A53 (NEON copies are half AVX2's
    # width, so memory-bound parts may need up to twice as many), at the stated IPC.
    zero = (ins["capture"] + rest) * HD.fps / (ZERO2W_HZ * ZERO2W_IPC) * 100
    enc = ins["encode_yuv"] * HD.fps / (ZERO2W_HZ * ZERO2W_IPC) * 100
    line(
        "Pi Zero 2 W estimate, all but enc",
        f"{zero:.0f} % of a core",
        f"x264 720p30 there {enc:.0f} %",
        "",
        True,
    )
    print(
        f"  estimate: x86 instruction counts, {ZERO2W_HZ / 1e9:.0f} GHz Cortex-A53 at "
        f"{ZERO2W_IPC} instructions a cycle; on the board the hardware encoder takes the "
        "encode off the cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", help="run one stage for callgrind")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--no-callgrind", action="store_true")
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.frames)
        return

    def line(name: str, value: str, baseline: str, target: str, ok: bool) -> None:
        print(f"{name:<34} {value:<22} {baseline:<34} target {target:<8} {'OK' if ok else ''}")

    with tempfile.TemporaryDirectory() as d:
        run(Path(d), line, callgrind=not args.no_callgrind)


if __name__ == "__main__":
    main()

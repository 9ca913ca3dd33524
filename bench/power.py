"""Power cuts on demand (issue 5): a recording agent killed with SIGKILL at random
moments, the footage each cut cost, the time back to recording, and from power-on to the
explain prompt; each beside a baseline from the same run."""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.archive.device_directory import DeviceDirectory, read_public_key
from common.archive.verify import verify_archive
from common.recording_settings import Recording
from common.settings import DeviceConfig
from simulator.device import SimDevice
from simulator.powercut import cut, footage_lost, start_agent

Line = Callable[[str, str, str, str, bool], None]

POWER_CUT_CONFIG = """
[recording]
width = 640
height = 360
fps = 15
prebuffer_seconds = 0
"""


def run(tmp: Path, line: Line, cuts: int = 12) -> None:
    """Kill `unbroken agent run --sim` with SIGKILL at random moments (issue 5): footage
    lost per cut, restart-to-recording time, and boot-to-prompt time."""
    rng = random.Random(7)
    data, config = tmp / "cuts", tmp / "cuts.toml"
    config.write_text(POWER_CUT_CONFIG)
    kills, restarts = [], []
    for _ in range(cuts):
        t = time.perf_counter()
        proc = start_agent(data, config)
        restarts.append(time.perf_counter() - t)
        time.sleep(rng.uniform(0.5, 2.5))
        kills.append(cut(proc))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import agent.recorder, av"], check=True)
    imports = time.perf_counter() - t
    last = start_agent(data, config)  # a last boot seals the last cut's gap
    last.terminate()
    last.wait(timeout=30)
    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    lost = sorted(footage_lost(report.sessions[0].gaps, kills))
    line(
        "footage lost per power cut",
        f"median {lost[len(lost) // 2]:.2f} s",
        f"worst {lost[-1]:.2f} s over {cuts} cuts",
        "<= ~1 s",
        lost[-1] <= 1.25,
    )
    restart = statistics.median(restarts)
    line(
        "restart to recording after a cut",
        f"{restart:.2f} s (median)",
        f"python + imports alone {imports:.2f} s",
        "",
        report.ok,
    )
    prompt_latency(tmp, line)


def prompt_latency(tmp: Path, line: Line) -> None:
    """From power-on (agent start on a disk left by a cut) to the explain prompt, in-process,
    against one frame interval."""
    cfg = DeviceConfig(recording=Recording(width=640, height=360, fps=15, prebuffer_seconds=0))
    dev = SimDevice(tmp / "prompt", cfg)
    dev.start()
    dev.recorder.open_session()
    dev.run(2.5)
    shutil.copytree(tmp / "prompt", tmp / "prompt-cut")
    dev.stop()
    t = time.perf_counter()
    again = SimDevice(tmp / "prompt-cut", cfg)
    again.start()
    prompted = again.recorder.indicator == "prompt"
    elapsed = time.perf_counter() - t
    again.stop()
    line(
        "power-on to explanation prompt",
        f"{elapsed * 1e3:.0f} ms",
        f"one frame interval {1000 / 15:.0f} ms",
        "",
        prompted,
    )

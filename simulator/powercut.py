"""Power cuts on demand: a recording agent process (``unbroken agent run --sim --open``)
killed with SIGKILL, as a cut battery would kill it, and the footage each cut cost.

Shared by the fault-injection test and the benchmark.

Example::

    agent = start_agent(data, config)      # returns once recording runs (after recovery)
    kill_at = cut(agent)                   # SIGKILL; the wall time of the cut
    lost = footage_lost(verify_archive(DeviceDirectory(data)).sessions[0].gaps, [kill_at])
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent


class AgentStartError(RuntimeError):
    pass


def agent_command(data: Path, *options: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``unbroken agent run --sim`` on ``data``."""
    cmd = [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data), "--sim"]
    return [*cmd, *options], {**os.environ, "PYTHONPATH": str(PROJECT)}


def start_agent(data: Path, config: Path) -> subprocess.Popen[str]:
    """Start the agent; return once it says it is recording (after any recovery)."""
    cmd, env = agent_command(data, "--open", "--no-sync", "--config", str(config))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout
    line = proc.stdout.readline()
    if not line.startswith("recording: recording"):
        proc.kill()
        raise AgentStartError(line + (proc.stderr.read() if proc.stderr else ""))
    return proc


def cut(proc: subprocess.Popen[str]) -> float:
    """SIGKILL: no handler runs, nothing is flushed. Returns the wall time of the cut."""
    at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return at


def footage_lost(gaps: list[dict[str, Any]], kills: list[float]) -> list[float]:
    """Seconds of footage each cut cost: from the end of the footage kept (or the resume
    before it) to the cut. ``gaps`` are a session's gaps from ``verify``, in order."""
    cuts = [g for g in gaps if g["cause"] == "power_loss"]
    resumed = [0.0] + [float(g["end"]) for g in cuts[:-1]]
    return [k - max(float(g["start"]), r) for k, g, r in zip(kills, cuts, resumed, strict=True)]

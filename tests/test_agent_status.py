"""``unbroken agent status`` shows an admin whether the agent runs and what it is doing:
state and session, storage, battery, GNSS, clock, last error; text and --json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.evidence_dir import verify_dir
from simulator.powercut import start_agent

pytestmark = pytest.mark.slow  # a real agent process, in real time


def status(data: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "unbroken.cli", "agent", "status", "--data", str(data), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_of_a_running_then_stopped_agent(tmp_path: Path) -> None:
    data, config = tmp_path / "bwc", tmp_path / "device.toml"
    config.write_text("[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 0\n")
    agent = start_agent(data, config)
    try:
        time.sleep(2.0)
        doc = json.loads(status(data, "--json"))
        assert doc["running"] is True
        live = doc["agent"]
        assert live["state"] == "recording" and live["session"]
        assert live["pid"] == agent.pid
        assert live["storage"]["free"] > 0 and live["battery"]["percent"] > 0
        assert live["gnss"]["fix"] is True and live["clock"]["synced"] in (True, False)
        text = status(data)
        assert f"agent    running (pid {agent.pid})" in text
        assert f"state    recording, session {live['session']}" in text
        assert "gnss     fix 31." in text and "storage  " in text and "clock    " in text
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    doc = json.loads(status(data, "--json"))
    assert doc["running"] is False and doc["agent"]["state"] != "recording"
    assert "agent    not running; last status" in status(data)
    assert verify_dir(data, data / "device.pub").ok  # the status file is not evidence


def test_status_of_a_device_that_never_ran(tmp_path: Path) -> None:
    keygen = ["agent", "keygen", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r.json")]
    subprocess.run(
        [sys.executable, "-m", "unbroken.cli", *keygen, "--serial", "S1"], check=True, timeout=60
    )
    text = status(tmp_path / "d")
    assert "not provisioned" in text and "agent    not running" in text


def test_the_agent_logs_what_an_admin_needs(tmp_path: Path) -> None:
    """One line per session open and close, interruption and recovery at boot (journald
    adds the time): at INFO by default for agent run."""
    data, config = tmp_path / "bwc", tmp_path / "device.toml"
    config.write_text("[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 0\n")
    agent = start_agent(data, config)
    time.sleep(1.0)
    agent.send_signal(signal.SIGKILL)  # a power cut
    agent.wait(10)
    again = start_agent(data, config)
    time.sleep(1.0)
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0
    assert agent.stderr is not None and again.stderr is not None
    first, second = agent.stderr.read(), again.stderr.read()
    assert "agent.lifecycle: session " in first and " opened (inspection" in first
    assert "boot: no session was left open" in first
    assert "session " in second and "resumed at boot" in second
    assert "interruption " in second and ": power_loss: found at boot" in second
    assert " closed (" in second and "Traceback" not in first + second

"""The agent as a systemd service: the shipped unit verifies and can start on any Debian
(it names no group a system may lack); readiness, status and watchdog pings reach a real
Unix datagram socket standing in for systemd's notify socket; outside systemd nothing is
sent."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import ServiceNotifier
from common.archive.device_directory import DeviceDirectory, read_public_key
from common.archive.verify import verify_archive
from simulator.powercut import agent_command, start_agent
from tests.fixtures.system import need

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "agent" / "units" / "unbroken-agent.service"


def test_the_shipped_unit_verifies_and_names_no_group(tmp_path: Path) -> None:
    """What install.sh writes, with this checkout's agent in place of the board's venv."""
    need("/usr/bin/systemd-analyze", "systemd")  # fails under CI without it, as the others
    unit = UNIT.read_text()
    venv = Path(sys.executable).parent.parent
    here = tmp_path / "unbroken-agent.service"
    here.write_text(unit.replace("/opt/unbroken/venv", str(venv)))
    check = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(here)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and not check.stderr, check.stderr
    # A supplementary group the system lacks (plain Debian has no gpio) fails the start
    # with status 216/GROUP; the user's memberships come from install.sh instead.
    assert not re.search(r"^SupplementaryGroups=", unit, re.M)
    for doc in re.findall(r"docs/[\w.-]+\.md", unit):
        assert (ROOT / doc).is_file(), f"the unit points to {doc}, which does not exist"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_ready_status_and_stopping_reach_the_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    n = ServiceNotifier.from_environment({"NOTIFY_SOCKET": path})
    assert n.active and n.watchdog_seconds is None
    n.ready("recording: buffering")
    assert sock.recv(4096) == b"READY=1\nSTATUS=recording: buffering"
    n.status("recording session s1")
    assert sock.recv(4096) == b"STATUS=recording session s1"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_the_watchdog_is_pinged_twice_per_interval(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    n = ServiceNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert n.watchdog_seconds == 10.0
    pinged = [t for t in (0.0, 1.0, 4.9, 5.0, 6.0, 10.1) if n.alive(t)]
    assert pinged == [0.0, 5.0, 10.1]
    assert [sock.recv(64) for _ in pinged] == [b"WATCHDOG=1"] * 3


def test_a_watchdog_meant_for_another_process_is_ignored(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}
    assert ServiceNotifier.from_environment(env).watchdog_seconds is None


def test_outside_systemd_nothing_is_sent() -> None:
    n = ServiceNotifier.from_environment({})
    assert not n.active and not n.alive(0.0)
    n.ready("x")  # no socket: nothing happens, nothing raises


def test_a_vanished_socket_never_stops_the_caller(tmp_path: Path) -> None:
    n = ServiceNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    n.ready()
    n.status("still recording")


@pytest.mark.slow
def test_a_stalled_loop_stops_the_pings_and_its_restart_is_an_interruption(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """The agent under a stand-in for systemd: READY, then watchdog pings from the frame
    loop; the loop stalls (SIGSTOP) and the pings stop; the supervisor kills and restarts it,
    as systemd's watchdog does, and the chain shows the stall as an interruption."""
    sock, path = notify_socket
    data, config = tmp_path / "bwc", tmp_path / "device.toml"
    config.write_text("[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 0\n")
    cmd, env = agent_command(data, "--open", "--no-sync", "--config", str(config))
    env = {**env, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        sock.settimeout(30)
        assert sock.recv(4096).startswith(b"READY=1\nSTATUS=recording: recording")
        sock.settimeout(5)
        assert [sock.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGSTOP)  # the loop stalls
        sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while sock.recv(64):  # what was sent before the stall
                pass
        sock.settimeout(1.5)  # past the watchdog interval: systemd would act now
        with pytest.raises(TimeoutError):
            sock.recv(64)
        proc.send_signal(signal.SIGKILL)  # what the watchdog does to a stalled service
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    again = start_agent(data, config)  # Restart=always
    time.sleep(1.0)
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0
    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    assert report.ok, report.problems[:3]
    gaps = [g for s in report.sessions for g in s.gaps]
    assert [g["cause"] for g in gaps] == ["power_loss"], gaps

"""``unbroken agent status`` shows an admin whether the agent runs and what it is doing:
identity, assignment, state and session, gaps, storage, battery, GNSS, clock, sync and the
store's refusal, last error; the text shows everything --json has, in human units."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.status_text import ago, format_status, size
from common.archive.device_directory import DeviceDirectory, read_public_key
from common.archive.verify import verify_archive
from simulator.powercut import start_agent

NOW = 1_796_000_000.0

# Every field `agent status --json` can hold, none empty: a running room controller with
# an assignment, a fix, a battery, a backlog, an open gap and a store that refuses it.
FULL: dict[str, Any] = {
    "device_id": "room-1a2b3c4d",
    "role": "room_controller",
    "model": "Raspberry Pi 4 Model B Rev 1.4",
    "key_id": "1a2b3c4d5e6f7a8b",
    "key_store": {"backend": "file", "weaker": True, "note": "a copied card can sign"},
    "provisioned": True,
    "assignment": {
        "command": "assign",
        "badges": ["340102"],
        "name": "Li Wei",
        "unit": "Unit 7",
        "room": "101",
        "nonce": "c-5f2a",
        "issued": NOW - 7200,
    },
    "agency_key_id": "9f8e7d6c5b4a3f2e",
    "broker": {"host": "broker.agency.example", "port": 8883},
    "certificate_expires": "2027-06-01T00:00:00Z",
    "running": True,
    "agent": {
        "device": "room-1a2b3c4d",
        "state": "recording",
        "session": "s-20261205-0001",
        "close_armed": True,
        "led": "on",
        "badges": ["340102"],
        "chain_head": 42,
        "last_error": "camera main: no frame for 2 s",
        "interrupted": ["camera:main"],
        "tracks": ["main", "wide"],
        "room": "101",
        "panel": "recording",
        "room_problem": "no room assigned: waiting for an assignment",
        "explain_prompt": True,
        "unexplained": ["g-0007"],
        "load": {"level": 1, "bitrate": 1_000_000, "picture_rate": 15.0, "busy": 0.93},
        "pid": 4242,
        "written_at": NOW - 3,
        "clock": {"wall": NOW - 3, "synced": True},
        "storage": {"free": 12_300_000_000, "total": 29_700_000_000},
        "battery": {"percent": 87.0, "external_power": True},
        "gnss": {"fix": True, "age": 2.0, "lat": 31.23, "lon": 121.47},
        "sync": {
            "connected": True,
            "deadline": "ok",
            "backlog": {
                "entries": 5,
                "blobs": 3,
                "bytes": 12_400_000,
                "oldest_unsynced_end": NOW - 4000,
            },
            "store_refusal": "revoked: this device was revoked",
        },
    },
}


def leaves(doc: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, (*path, k))
    else:
        yield path


def changed(value: Any) -> Any:
    """Another value of the same kind, different enough to show in any human unit."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 3 + 7
    if isinstance(value, str):
        return value + "Q"
    if isinstance(value, list):
        return [*value, "zz9"]
    raise AssertionError(f"no sample value for {value!r}")


def test_the_text_shows_every_field_of_the_json() -> None:
    """Each field of --json, changed alone, changes the text: none is left out."""
    shown = format_status(FULL, NOW)
    for path in leaves(FULL):
        doc = copy.deepcopy(FULL)
        *parents, last = path
        at = doc
        for k in parents:
            at = at[k]
        at[last] = changed(at[last])
        assert format_status(doc, NOW) != shown, f"{'.'.join(path)} is not in the text"


def test_human_units_and_the_assignment_in_the_text() -> None:
    text = format_status(FULL, NOW)
    assert "assigned badge(s) 340102; name Li Wei; unit Unit 7; room 101 (assign command" in text
    assert "storage  12.3 GB free of 29.7 GB (41 %)" in text
    assert (
        "backlog 3 segment(s) / 12.4 MB, 5 chain entries not yet acknowledged, oldest "
        "unsynced ended 1 h 06 min ago" in text
    )
    assert "gaps     INTERRUPTED now: camera:main; 1 unexplained: g-0007; the explain" in text
    assert "error    ERROR camera main: no frame for 2 s" in text
    assert "load     STEPPED DOWN to step 1: 15 pictures/s at 1.0 Mbit/s, work 93 %" in text
    assert "certificate until 2027-06-01T" in text  # ISO, with the local offset
    assert [ago(s) for s in (4, 600, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "4 s",
        "10 min",
        "3 h 05 min",
        "2 d 4 h",
    ]
    assert [size(n) for n in (512, 12_400_000, 2.5e9)] == ["512 B", "12.4 MB", "2.5 GB"]


def test_a_store_that_refuses_the_device_is_an_error_never_ok() -> None:
    text = format_status(FULL, NOW)
    sync = [line for line in text.splitlines() if line.startswith("sync ")]
    assert sync == [
        "sync     ERROR: the store refuses this device: revoked: this device was revoked"
    ]
    assert "deadline ok" not in text and " ok" not in text.split("sync ", 1)[1]
    accepted = copy.deepcopy(FULL)
    accepted["agent"]["sync"]["store_refusal"] = None
    text = format_status(accepted, NOW)
    assert "ERROR: the store" not in text and "sync     connected, deadline ok, backlog 3" in text


def test_an_agent_without_sync_battery_or_fix_says_so() -> None:
    doc = copy.deepcopy(FULL)
    a = doc["agent"]
    del a["sync"]
    a.update(battery=None, storage=None, gnss={"fix": False, "age": None, "lat": None, "lon": None})
    doc["assignment"] = None
    text = format_status(doc, NOW)
    assert "sync     off" in text and "battery  none (mains)" in text
    assert "gnss     no fix, never a fix" in text and "storage  unknown" in text
    assert "assigned nobody" in text


def status(data: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "unbroken.cli", "agent", "status", "--data", str(data), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow  # a real agent process, in real time
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
        assert "gaps     " in text and "assigned nobody" in text
        # Every field the real agent's --json has is one the text is shown to render.
        known = {p[:i] for p in leaves(FULL) for i in range(1, len(p) + 1)}
        missing = [p for p in leaves(doc) if p not in known]
        assert not missing, f"fields not in FULL (and not checked in the text): {missing}"
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    doc = json.loads(status(data, "--json"))
    assert doc["running"] is False and doc["agent"]["state"] != "recording"
    assert "agent    not running; status of " in status(data)
    assert verify_archive(
        DeviceDirectory(data), read_public_key(data / "device.pub")
    ).ok  # the status file is not evidence


@pytest.mark.slow
def test_status_of_a_device_that_never_ran(tmp_path: Path) -> None:
    keygen = ["agent", "keygen", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r.json")]
    subprocess.run(
        [sys.executable, "-m", "unbroken.cli", *keygen, "--serial", "S1"], check=True, timeout=60
    )
    text = status(tmp_path / "d")
    assert "not provisioned" in text and "agent    not running" in text


@pytest.mark.slow
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


@pytest.mark.slow  # a real broker and store worker
def test_a_revoked_device_shows_the_stores_refusal_as_an_error(tmp_path: Path) -> None:
    """The issue's case: the broker still admits a revoked device (its CRL not yet
    reloaded) and the store refuses everything it sends; status says so, never "ok"."""
    from agent.journal.sync_ledger import SyncLedger
    from agent.status_file import StatusFile
    from agent.sync import backlog
    from simulator.device import SimDevice
    from simulator.site import LocalSite
    from tests.fixtures.config import small_config

    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        data = site.provision_device("bwc-0001")
        site.agency.revoke("bwc-0001", "reported lost", time.time())
        dev = SimDevice(data, small_config(prebuffer_seconds=2))
        dev.start()
        dev.run(2)
        dev.recorder.open_session()
        dev.run(3)
        dev.recorder.close_session()
        up = site.uploader(data, dev.clock)
        up.start()
        try:
            deadline = time.monotonic() + 60
            while up.store_refusal is None and time.monotonic() < deadline:
                time.sleep(0.2)
            status = StatusFile(
                data, dev.recorder, dev.hardware, dev.clock, up, lambda: backlog(SyncLedger(data))
            )
            snap = status.snapshot(time.monotonic())
        finally:
            up.stop()
            dev.stop()
    refusal = snap["sync"]["store_refusal"]
    assert refusal is not None and refusal.startswith("revoked: "), (refusal, up.refusals)
    doc = {
        "device_id": "bwc-0001",
        "role": "body_recorder",
        "key_id": "k",
        "provisioned": False,
        "running": True,
        "agent": snap,
    }
    text = format_status(doc, time.time())
    assert f"sync     ERROR: the store refuses this device: {refusal}" in text
    assert "deadline ok" not in text

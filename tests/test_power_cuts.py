"""Fault injection: the agent is killed with SIGKILL at random moments while recording.

Each kill is a power cut. After every restart the invariants must hold: the chain
verifies, every gap in the session is covered by an interruption entry, no sealed segment
is lost or corrupted, and no more than about a second of footage is lost per cut.

``UNBROKEN_POWER_CUTS`` sets the number of cuts (default 30; the soak target runs 200).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.media import hash_file
from common.archive.verify import verify_archive
from evidence.seal import Entry
from simulator.powercut import cut, footage_lost, start_agent

pytestmark = pytest.mark.slow  # agent processes killed while they record, in real time

CUTS = int(os.environ.get("UNBROKEN_POWER_CUTS", "30"))
SEED = 20260314
CONFIG = """
[recording]
width = 320
height = 180
fps = 10
prebuffer_seconds = 0

[continuity]
explain_seconds = 1.0
"""


def test_random_power_cuts_keep_every_invariant(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data, config = tmp_path / "bwc", tmp_path / "device.toml"
    config.write_text(CONFIG)
    kills: list[float] = []
    sealed: dict[str, str] = {}  # file -> sha256, as sealed before each cut
    for _ in range(CUTS):
        proc = start_agent(data, config)
        time.sleep(rng.uniform(0.3, 2.5))
        kills.append(cut(proc))
        for _, e in load_chain(data):
            if isinstance(e, Entry) and e.kind == "segment":
                sealed.setdefault(e.body["file"], e.body["sha256"])
    last = start_agent(data, config)
    time.sleep(1.5)
    last.send_signal(signal.SIGTERM)
    assert last.wait(timeout=30) == 0

    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    assert report.ok, report.problems[:5]  # includes: no silent gap, chain intact
    (session,) = report.sessions
    assert session.state == "closed"
    cuts = [g for g in session.gaps if g["cause"] == "power_loss"]
    assert len(cuts) == CUTS, "every cut is an interruption of the session"
    # no sealed segment lost or changed by a later cut
    for file, sha in sealed.items():
        assert hash_file(data / file)[1] == sha, file
    lost = footage_lost(session.gaps, kills)
    assert max(lost) <= 1.25, f"worst loss {max(lost):.2f} s"
    print(
        f"{CUTS} cuts: footage lost median {sorted(lost)[len(lost) // 2]:.2f} s, "
        f"worst {max(lost):.2f} s"
    )


def test_power_cuts_in_an_interview_room_keep_every_track(tmp_path: Path) -> None:
    """A room controller cut three times mid-interview: every track's footage up to about
    a second before each cut is sealed (recovered from the spool), the session resumes on
    every track, and each cut is one gap of the whole room."""
    data, config = tmp_path / "room", tmp_path / "room.toml"
    config.write_text(CONFIG + "\n[room]\ncameras = ['subject', 'room']\n")
    rng = random.Random(SEED + 1)
    kills = []
    for _ in range(3):
        proc = start_agent(data, config)
        time.sleep(rng.uniform(1.2, 2.5))
        kills.append(cut(proc))
    last = start_agent(data, config)
    time.sleep(1.5)
    last.send_signal(signal.SIGTERM)
    assert last.wait(timeout=30) == 0
    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    assert report.ok, report.problems[:5]
    (session,) = report.sessions
    assert set(session.tracks) == {"subject", "room", "pip"}
    cuts = [g for g in session.gaps if g["cause"] == "power_loss"]
    assert len(cuts) == 3 and all(not g["tracks"] for g in cuts)
    recovered = [e for _, e in load_chain(data) if isinstance(e, Entry) and e.body.get("recovered")]
    assert {e.body["track"] for e in recovered} == {"subject", "room", "pip"}
    assert max(footage_lost(session.gaps, kills)) <= 1.1

"""Falling behind is an interruption: a recorder that cannot keep real time steps its load
down (bitrate, then pictures a second) and seals the time it loses anyway as an
``overload`` gap, so `verify` finds no silent one.

The decisions against a fake clock; the real recorder on simulated hardware against a
simulated clock (the frames' work takes simulated time); the real agent process stalled
(SIGSTOP) and starved of CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agent.capture import Capture
from agent.loop import Pacer
from agent.overload import LoadGovernor, time_lost
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from common.recording_settings import LoadStep, Overload
from device.clock import SimClock
from evidence.seal import Entry
from simulator.device import SimDevice
from simulator.powercut import start_agent
from tests.fixtures.config import small_config

FPS = 10
STEPS = [LoadStep(bitrate=1_000_000), LoadStep(bitrate=1_000_000, hold=2)]


def _governor(**settings: object) -> LoadGovernor:
    o = Overload(**{"up_seconds": 10.0, "steps": STEPS, **settings})  # type: ignore[arg-type]
    return LoadGovernor(o, fps=FPS, bitrate=2_000_000)


def _feed(gov: LoadGovernor, share: float, seconds: float, t: float) -> tuple[float, list]:
    """Frames whose work takes ``share`` of the interval, for ``seconds`` from ``t``."""
    changes = []
    for _ in range(round(seconds * FPS)):
        t += 1 / FPS
        if change := gov.frame(share / FPS, t):
            changes.append((round(t, 1), change))
    return t, changes


# -- the decisions ------------------------------------------------------------------------


def test_time_is_lost_only_past_the_limit() -> None:
    assert time_lost(footage_end=10.0, taken=10.2, limit=0.25) == 0.0
    assert time_lost(footage_end=10.0, taken=12.5, limit=0.25) == pytest.approx(2.5)
    assert time_lost(footage_end=10.0, taken=9.0, limit=0.25) == 0.0  # ahead: nothing lost


def test_a_busy_loop_steps_down_after_down_seconds_and_no_further_than_the_last_step() -> None:
    gov = _governor()
    _, changes = _feed(gov, 0.95, 30.0, 0.0)
    assert [c.level for _, c in changes] == [1, 2], "two steps configured: no third"
    (t1, first), (t2, second) = changes
    assert (first.bitrate, first.picture_rate, first.reason) == (1_000_000, 10.0, "busy")
    assert (second.bitrate, second.picture_rate) == (1_000_000, 5.0)
    assert t2 - t1 >= 2.0, "each step waits down_seconds of load at the new level"
    assert gov.hold == 2 and gov.bitrate == 1_000_000
    assert first.event().to_body() == {
        "type": "load_reduced",
        "level": 1,
        "bitrate": 1_000_000,
        "picture_rate": 10.0,
        "busy": round(first.busy, 3),
        "reason": "busy",
    }


def test_a_load_between_the_thresholds_changes_nothing() -> None:
    gov = _governor()
    _, changes = _feed(gov, 0.6, 120.0, 0.0)
    assert changes == [] and gov.level == 0


def test_a_short_burst_of_load_is_not_a_step() -> None:
    gov = _governor()
    t, changes = _feed(gov, 0.2, 5.0, 0.0)
    for _ in range(10):  # a second at full load, then light again: never 2 s above
        t, more = _feed(gov, 1.0, 1.0, t)
        t, after = _feed(gov, 0.2, 2.0, t)
        changes += more + after
    assert changes == []


def test_lost_time_steps_down_at_once() -> None:
    gov = _governor()
    change = gov.lost(at=5.0)
    assert change is not None and (change.level, change.reason) == (1, "lost_time")
    assert gov.lost(at=5.1) is not None and gov.lost(at=5.2) is None  # at the last step


def test_the_load_steps_back_up_after_up_seconds_of_spare_time() -> None:
    gov = _governor()
    gov.lost(0.0)
    gov.lost(0.0)
    _, changes = _feed(gov, 0.1, 25.0, 0.0)
    assert [(c.level, c.reason, c.reduced) for _, c in changes] == [
        (1, "spare", False),
        (0, "spare", False),
    ]
    assert changes[0][0] >= 10.0 and changes[1][0] - changes[0][0] >= 10.0
    assert changes[1][1].event().type == "load_restored" and gov.bitrate == 2_000_000


def _until_change(gov: LoadGovernor, share: float, t: float) -> tuple[float, int]:
    """Frames of ``share`` load from ``t`` until the level changes: when, and to what."""
    while (change := gov.frame(share / FPS, t := t + 1 / FPS)) is None:
        assert t < 1000, "no change"
    return t, change.level


def test_a_step_up_that_does_not_hold_doubles_the_wait_for_the_next() -> None:
    """A machine on the edge: fine at level 1, overloaded at level 0. It does not swing
    between them every up_seconds: each relapse doubles the wait, up to 8 times."""
    gov = _governor()
    gov.lost(0.0)
    t, waits = 0.0, []
    for _ in range(5):
        start = t
        t, level = _until_change(gov, 0.1, t)  # light at level 1: steps up
        assert level == 0
        waits.append(t - start)
        t, level = _until_change(gov, 1.0, t)  # too much at level 0: back down
        assert level == 1
    assert [round(w / 10) for w in waits] == [1, 2, 4, 8, 8]


def test_thresholds_without_hysteresis_are_refused() -> None:
    with pytest.raises(ValidationError, match="busy_low must be below busy_high"):
        Overload(busy_low=0.9, busy_high=0.8)
    with pytest.raises(ValidationError, match="lost_seconds"):
        Overload(lost_seconds=1.0)  # past the verifier's tolerance: a hole could go silent


def test_pacer_restarted_after_lost_time_does_not_race() -> None:
    pacer = Pacer(fps=10, start=100.0)
    assert pacer.delay(5, now=103.0) == 0.0  # 2.5 s late: it would race 25 frames
    pacer.restart(5, at=103.0)
    assert pacer.delay(6, now=103.02) == pytest.approx(0.08)


# -- the real recorder, its frames' work taking simulated time ---------------------------


class Burdened:
    """Drawing a frame's pictures (the watermark, the picture-in-picture) on a machine
    where that takes ``cost`` seconds: each drawing moves the simulated clock on by that
    much. (Waiting for a camera or the microphone is no load: it is not counted.)"""

    def __init__(self, capture: Capture, clock: SimClock) -> None:
        self.draw, self.clock, self.cost = capture.pictures_of, clock, 0.0
        self.drawn = 0
        capture.pictures_of = self  # type: ignore[method-assign]

    def __call__(self, *args: Any) -> dict[str, np.ndarray]:
        self.clock.advance(self.cost)
        self.drawn += 1
        return self.draw(*args)


def _paced(dev: SimDevice, seconds: float) -> None:
    """The frame loop's pacing (:class:`Pacer`), on the simulated clock."""
    clock, fps = dev.clock, dev.config.recording.fps
    pacer = Pacer(fps, clock.monotonic())
    for n in range(round(seconds * fps)):
        began = clock.monotonic()
        if dev.recorder.step():
            pacer.restart(n, began)
        clock.advance(pacer.delay(n + 1, clock.monotonic()))


def _device(root: Path, **overload: object) -> tuple[SimDevice, Burdened]:
    settings = Overload(**{"steps": STEPS, "up_seconds": 3.0, **overload})  # type: ignore[arg-type]
    cfg = small_config(fps=FPS, prebuffer_seconds=0)
    rec = cfg.recording.model_copy(update={"overload": settings})
    dev = SimDevice(root, cfg.model_copy(update={"recording": rec}))
    burden = Burdened(dev.recorder.capture, dev.clock)
    dev.start()
    dev.recorder.open_session()
    return dev, burden


def _entries(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry)]


def _verified_gaps(root: Path) -> list[dict]:
    report = verify_archive(DeviceDirectory(root), read_public_key(root / "device.pub"))
    assert report.ok, report.problems  # no silent_gap among them
    (s,) = report.sessions
    return s.gaps


def test_a_busy_recorder_steps_down_and_back_up_and_loses_nothing(tmp_path: Path) -> None:
    dev, burden = _device(tmp_path / "d")
    _paced(dev, 2.0)
    burden.cost = 0.09  # 90 % of each frame's interval: still in time, barely
    drawn = burden.drawn
    _paced(dev, 9.0)
    load = dev.recorder.status()["load"]  # what `agent status` shows
    assert (load["level"], load["bitrate"], load["picture_rate"]) == (2, 1_000_000, 5.0)
    held = burden.drawn
    _paced(dev, 2.0)
    assert burden.drawn - held == 10, "one picture per two frames"
    assert drawn < held
    burden.cost = 0.005
    _paced(dev, 10.0)
    dev.recorder.close_session()
    dev.stop()
    root = dev.recorder.root
    assert _verified_gaps(root) == [], "stepping down is no gap: nothing was lost"
    entries = _entries(root)
    events = [e.body for e in entries if e.kind == "event"]
    assert [(b["type"], b["level"], b["picture_rate"]) for b in events] == [
        ("load_reduced", 1, 10.0),
        ("load_reduced", 2, 5.0),
        ("load_restored", 1, 10.0),
        ("load_restored", 0, 10.0),
    ]
    assert all(e.session for e in entries if e.kind == "event"), "on the session's record"
    rates = [e.body["media"]["video"]["bitrate"] for e in entries if e.kind == "segment"]
    full = dev.config.recording.video_bitrate
    assert rates[0] == full and 1_000_000 in rates and rates[-1] == full


def test_waiting_for_the_sound_card_is_no_load(tmp_path: Path) -> None:
    """A sound card that hands each frame's samples as they are captured paces the loop
    (most of each interval is spent waiting for it): nothing steps down."""
    dev, _ = _device(tmp_path / "d")
    mic, clock = dev.microphone, dev.clock
    listen = mic.read

    def paced_by_the_card(n: int) -> np.ndarray:
        clock.advance(0.09)
        return listen(n)

    mic.read = paced_by_the_card  # type: ignore[method-assign]
    _paced(dev, 8.0)
    assert dev.recorder.status()["load"]["level"] == 0
    dev.recorder.close_session()
    dev.stop()
    assert _verified_gaps(dev.recorder.root) == []
    assert not [e for e in _entries(dev.recorder.root) if e.kind == "event"]


def test_a_recorder_too_slow_for_real_time_seals_what_it_loses(tmp_path: Path) -> None:
    """Each picture takes longer than a frame interval: the loop falls behind frame by
    frame. Lost time is sealed twice (each stepping down at once); at half the picture
    rate it keeps up."""
    dev, burden = _device(tmp_path / "d", up_seconds=600.0)
    _paced(dev, 2.0)
    burden.cost = 0.15
    _paced(dev, 20.0)
    dev.recorder.close_session()
    dev.stop()
    gaps = _verified_gaps(dev.recorder.root)
    assert [(g["cause"], g["explanation"]) for g in gaps] == [("overload", "voice")] * 2
    assert all(0.4 < g["length"] < 0.5 for g in gaps), gaps
    assert all(g["detail"].endswith("s behind real time") for g in gaps)
    assert dev.recorder.frames.governor.level == 2


def test_a_stalled_recorder_seals_the_stall_and_its_timeline_skips_it(tmp_path: Path) -> None:
    dev, _ = _device(tmp_path / "d")
    _paced(dev, 3.0)
    dev.clock.advance(2.0)  # the loop stalled between two frames
    _paced(dev, 3.0)
    dev.recorder.close_session()
    dev.stop()
    root = dev.recorder.root
    (gap,) = _verified_gaps(root)
    assert gap["cause"] == "overload" and gap["length"] == pytest.approx(2.0, abs=0.15)
    entries = _entries(root)
    kinds = [e.kind for e in entries]
    at = kinds.index("interruption")
    assert kinds[at - 1] == "segment" and "segment" in kinds[at + 1 :], "between the footage"
    segs = [e.body["media"]["video"] for e in entries if e.kind == "segment"]
    jumps = [b["first_frame"] - a["first_frame"] - a["frames"] for a, b in pairwise(segs)]
    assert sorted(jumps)[-1] == 20 and sorted(jumps)[:-1] == [0] * (len(jumps) - 1)


def test_time_lost_before_a_session_is_its_gap_when_the_footage_becomes_its(
    tmp_path: Path,
) -> None:
    cfg = small_config(fps=FPS, prebuffer_seconds=5)
    dev = SimDevice(tmp_path / "d", cfg)
    dev.start()
    dev.run(2)
    dev.clock.advance(1.0)  # a stall while buffering
    dev.run(2)
    dev.recorder.open_session()
    dev.run(2)
    dev.recorder.close_session()
    dev.stop()
    (gap,) = _verified_gaps(dev.recorder.root)
    assert gap["cause"] == "overload" and gap["length"] == pytest.approx(1.0, abs=0.15)


# -- the real agent, stalled and starved -------------------------------------------------


def _config(path: Path, extra: str = "") -> Path:
    path.write_text(
        "[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 0\n" + extra
    )
    return path


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""


@pytest.mark.slow
def test_an_agent_stopped_for_seconds_seals_the_stall_as_overload(tmp_path: Path) -> None:
    """A real stall: the agent process is stopped (SIGSTOP) for two seconds mid-session."""
    data = tmp_path / "bwc"
    proc = start_agent(data, _config(tmp_path / "device.toml"))
    try:
        time.sleep(2.0)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        proc.send_signal(signal.SIGCONT)
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGCONT)
        _stop(proc)
    gaps = _verified_gaps(data)
    overloads = [g for g in gaps if g["cause"] == "overload"]
    assert overloads and all(g["detail"].endswith("behind real time") for g in overloads)
    assert max(g["length"] for g in overloads) > 1.0, overloads
    events = [e.body for e in _entries(data) if e.kind == "event"]
    assert any(b["type"] == "load_reduced" and b["reason"] == "lost_time" for b in events)


@pytest.fixture
def burners() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(10)


@pytest.mark.slow
def test_an_agent_starved_of_cpu_never_leaves_a_silent_gap(
    tmp_path: Path, burners: list[subprocess.Popen[bytes]]
) -> None:
    """The agent and CPU burners pinned to one core, the burners at a higher priority
    than the agent: it cannot keep up. Whatever it loses is sealed; it steps down."""
    core = {min(os.sched_getaffinity(0))}
    data = tmp_path / "bwc"
    config = _config(
        tmp_path / "device.toml",
        "[recording.overload]\ndown_seconds = 1.0\n",
    )
    proc = start_agent(data, config)
    try:
        os.sched_setaffinity(proc.pid, core)
        for _ in range(3):
            burn = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(burn.pid, core)
            burners.append(burn)
        os.setpriority(os.PRIO_PROCESS, proc.pid, 19)  # the others take the core first
        time.sleep(8.0)
        for b in burners:
            b.kill()
        time.sleep(1.0)
    finally:
        _stop(proc)
    entries = _entries(data)
    gaps = _verified_gaps(data)  # verifies: no silent_gap, whatever was lost
    steps = [e.body for e in entries if e.kind == "event" and e.body["type"] == "load_reduced"]
    assert steps, "a starved recorder steps its load down"
    assert all(g["cause"] == "overload" for g in gaps)

"""The frame loop, its pacing and what it relays between the recorder, the uploader and a
room's lamp: on stand-ins, without threads, sockets or disks."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from agent.loop import FrameLoop, Pacer, relay_state
from device.clock import SimClock


@dataclass
class FakeRecorder:
    off_after: int | None = None  # steps before a battery shutdown
    steps: int = 0
    powered_off: bool = False
    session: object | None = None
    room: object | None = None
    panel_state: str = "idle"
    indicator: str = "buffering"
    sync_deadline: str | None = None
    posted: threading.Event = field(default_factory=threading.Event)
    handled: list[int] = field(default_factory=list)  # steps done when events were handled

    def handle_events(self) -> None:
        self.posted.clear()
        self.handled.append(self.steps)

    def step(self) -> None:
        if self.powered_off:
            return
        self.steps += 1
        if self.off_after is not None and self.steps >= self.off_after:
            self.powered_off = True


@dataclass
class FakeUploader:
    deadline_level: str = "warn"
    panel: list[str] = field(default_factory=list)

    def show_on_panel(self, state: str) -> None:
        self.panel.append(state)


@dataclass
class FakeLamp:
    lit: list[bool] = field(default_factory=list)

    def show(self, recording: bool) -> None:
        self.lit.append(recording)


@dataclass
class FakeControls:
    led: list[str] = field(default_factory=list)

    def show(self, pattern: str) -> None:
        self.led.append(pattern)


def _loop(rec: FakeRecorder, **options: Any) -> FrameLoop:
    return FrameLoop(cast(Any, rec), 10, realtime=False, **options)


def test_the_pacer_schedules_frame_n_at_n_over_fps() -> None:
    pacer = Pacer(fps=10, start=100.0)
    assert pacer.delay(3, now=100.1) == pytest.approx(0.2)
    assert pacer.delay(3, now=100.5) == 0.0  # late: no wait, and it races to catch up
    assert pacer.start == 100.0


def test_a_pacer_far_behind_starts_its_schedule_again() -> None:
    pacer = Pacer(fps=10, start=100.0, max_lag=1.0)
    assert pacer.delay(10, now=101.5) == 0.0  # half a second late: keeps the schedule
    assert pacer.start == 100.0
    assert pacer.delay(10, now=103.0) == 0.0  # two seconds late: from now on
    assert pacer.delay(11, now=103.0) == pytest.approx(0.1)


def test_relay_state_lights_the_lamp_and_passes_deadline_and_panel_state() -> None:
    rec, up, lamp = FakeRecorder(session="s1"), FakeUploader(), FakeLamp()
    relay_state(cast(Any, rec), cast(Any, up), cast(Any, lamp))
    assert lamp.lit == [True] and rec.sync_deadline == "warn"
    assert up.panel == []  # a body recorder has no panel
    rec.room, rec.panel_state, rec.session = object(), "recording", None
    relay_state(cast(Any, rec), cast(Any, up), cast(Any, lamp))
    assert lamp.lit == [True, False] and up.panel == ["recording"]


def test_relay_state_without_uploader_leaves_the_deadline() -> None:
    rec = FakeRecorder()
    relay_state(cast(Any, rec), None)
    assert rec.sync_deadline is None


def test_a_fixed_run_steps_every_frame_and_advances_the_simulated_clock() -> None:
    rec, clock, controls = FakeRecorder(), SimClock(), FakeControls()
    start = clock.monotonic()
    seen: list[int] = []
    n = _loop(rec, clock=clock, controls=controls, on_frame=seen.append).run(frames=5)
    assert n == rec.steps == 5 and seen == [1, 2, 3, 4, 5]
    assert controls.led == ["buffering"] * 5
    assert clock.monotonic() - start == pytest.approx(0.5)


def test_a_fixed_run_lets_device_time_pass_after_power_off() -> None:
    rec, clock = FakeRecorder(off_after=2), SimClock()
    start = clock.monotonic()
    assert _loop(rec, clock=clock).run(frames=6) == 6
    assert rec.steps == 2 and clock.monotonic() - start == pytest.approx(0.6)


def test_an_open_run_ends_at_power_off() -> None:
    rec = FakeRecorder(off_after=3)
    assert _loop(rec).run() == 3


def test_an_open_run_ends_when_stopped() -> None:
    rec = FakeRecorder()
    loop = _loop(rec)
    loop.on_frame = lambda n: loop.stop() if n == 4 else None
    assert loop.run() == 4 and rec.steps == 4


def test_what_is_posted_while_the_loop_waits_is_handled_before_the_next_frame() -> None:
    rec = FakeRecorder()
    loop = FrameLoop(cast(Any, rec), 2, realtime=True)  # half a second between frames
    threading.Timer(0.1, rec.posted.set).start()  # a press, early in the wait
    loop.run(frames=2)
    assert rec.handled == [1], "handled while waiting after frame 1, not at frame 2"

"""The room panel's firmware (device/panel/main.py): first its decisions (debounce,
keepalive, what the lamp and the LED show) on a clock the test moves, then the firmware as
it runs on a board: the real MicroPython unix port executes the file
(tests/fixtures/panel.py starts it), against a real Mosquitto configured by provisioning;
the room controller's side is paho (MQTT v5) with the room controller's own certificate.

That the panel's certificate cannot publish outside its room is tested in test_broker.py.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common import pki
from tests.fixtures.fleet import Client, Fleet
from tests.fixtures.panel import (
    BOARD,
    FIRMWARE,
    TIMEOUT,
    BoardClock,
    InputPin,
    Panel,
    launch_firmware,
    load_firmware,
    tool,
)

ROOM = "101"
TOPICS = f"unbroken/p/{ROOM}/"


# -- the decisions, on a clock the test moves -------------------------------------------


@pytest.fixture(scope="module")
def firmware() -> types.ModuleType:
    return load_firmware()


def led(indicator: Any, clock: BoardClock, up: bool = True) -> str:
    """What the status LED does over the next 2 s (sampled every 10 ms): "on", "off", or
    "blinks every N ms" (N the time it holds each level)."""
    levels = [indicator.levels(clock.advance(10), up)[1] for _ in range(200)]
    changes = [i for i in range(1, len(levels)) if levels[i] != levels[i - 1]]
    if not changes:
        return "on" if levels[0] else "off"
    halves = {(b - a) * 10 for a, b in itertools.pairwise(changes)}
    return f"blinks every {halves.pop()} ms" if len(halves) == 1 else f"irregular: {halves}"


@pytest.mark.parametrize(
    ("state", "lamp", "shown"),
    [
        (b"idle", 0, "on"),
        (b"recording", 1, "on"),
        (b"confirm", 0, "blinks every 500 ms"),
        (b"fault", 0, "blinks every 100 ms"),
        (b"no-such-state", 0, "blinks every 100 ms"),
    ],
)
def test_lamp_and_led_show_the_controller_state(
    firmware: types.ModuleType, state: bytes, lamp: int, shown: str
) -> None:
    clock = BoardClock()
    indicator = firmware.Indicator(20_000, clock)
    indicator.heard(state, clock.ticks_ms())
    assert indicator.levels(clock.ticks_ms())[0] == lamp
    assert led(indicator, clock) == shown


def test_no_state_yet_or_disconnected_blinks_fast_with_the_lamp_dark(
    firmware: types.ModuleType,
) -> None:
    clock = BoardClock()
    indicator = firmware.Indicator(20_000, clock)
    assert led(indicator, clock) == "blinks every 100 ms"
    indicator.heard(b"recording", clock.ticks_ms())
    assert indicator.levels(clock.ticks_ms(), up=False)[0] == 0
    assert led(indicator, clock, up=False) == "blinks every 100 ms"


def test_lamp_stays_lit_while_the_state_is_repeated_and_goes_dark_when_it_stops(
    firmware: types.ModuleType,
) -> None:
    clock = BoardClock()
    indicator = firmware.Indicator(2000, clock)
    indicator.heard(b"recording", clock.ticks_ms())
    for _ in range(3):  # the controller repeats it every second
        now = clock.advance(1000)
        assert indicator.levels(now) == (1, 1)
        indicator.heard(b"recording", now)
    assert indicator.levels(clock.advance(2000)) == (1, 1)  # 2 s is still within state_stale
    now = clock.advance(1)
    assert indicator.levels(now)[0] == 0
    assert led(indicator, clock) == "blinks every 100 ms"
    indicator.heard(b"recording", clock.ticks_ms())
    assert indicator.levels(clock.ticks_ms()) == (1, 1)


def test_a_state_goes_stale_across_the_ticks_wrapping(firmware: types.ModuleType) -> None:
    clock = BoardClock(start=BoardClock.PERIOD - 500)
    indicator = firmware.Indicator(2000, clock)
    indicator.heard(b"recording", clock.ticks_ms())
    assert indicator.levels(clock.advance(2000))[0] == 1
    assert clock.ticks_ms() == 1500  # wrapped
    assert indicator.levels(clock.advance(1))[0] == 0


def test_a_bounce_shorter_than_the_debounce_time_changes_nothing(
    firmware: types.ModuleType,
) -> None:
    clock, pin = BoardClock(), InputPin(1)
    door = firmware.Debounced(pin, 1000, clock)
    for level in (0, 1, 0, 1, 0, 1):  # 240 ms of contact bounce, back where it started
        pin.level = level
        assert not any(door.changed(clock.advance(10)) for _ in range(4))
    assert not any(door.changed(clock.advance(100)) for _ in range(20))
    assert door.value == 1


def test_a_level_held_for_the_debounce_time_counts_once(firmware: types.ModuleType) -> None:
    clock, pin = BoardClock(), InputPin(1)
    key = firmware.Debounced(pin, 1000, clock)
    pin.level = 0
    assert not key.changed(clock.ticks_ms())  # held since now
    assert not key.changed(clock.advance(999))
    assert key.changed(clock.advance(1)) and key.value == 0
    assert not key.changed(clock.advance(5000))


def test_heartbeat_pings_every_half_keepalive_and_a_silent_broker_is_dead(
    firmware: types.ModuleType,
) -> None:
    start = BoardClock.PERIOD - 3000  # the ticks wrap on the way
    clock = BoardClock(start)
    heartbeat = firmware.Heartbeat(4000, clock)
    heartbeat.start(clock.ticks_ms())
    pings = [now for now in (clock.advance(10) for _ in range(1000)) if heartbeat.ping_due(now)]
    assert [clock.ticks_diff(p, start) for p in pings] == [2000, 4000, 6000, 8000, 10_000]

    clock = BoardClock(start)
    heartbeat = firmware.Heartbeat(4000, clock)
    rx = clock.ticks_ms()  # the last byte from the broker
    assert not heartbeat.silent(clock.advance(4000), rx)
    assert heartbeat.silent(clock.advance(1), rx)


# -- the broker and the room controller's side ----------------------------------------------


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retained: bool


class Controller(Client):
    """The room controller (its certificate; MQTT v5), subscribed to the room's topics."""

    def __init__(self, fleet: Fleet, suffix: str = "") -> None:
        super().__init__(fleet.device_id("r") + suffix, fleet.device("r"), fleet.port)
        self.got: queue.Queue[Msg] = queue.Queue()
        self.seen: list[Msg] = []
        self.pending: list[Msg] = []
        self.c.on_message = lambda _c, _u, m: self.got.put(
            Msg(m.topic, bytes(m.payload), bool(m.retain))
        )

    def start(self) -> Controller:
        result = self.connect()
        assert result == "connected", result
        assert self.subscribe(TOPICS + "#") == [1]
        return self

    def retain(self, name: str, payload: bytes) -> None:
        info = self.c.publish(TOPICS + name, payload, qos=1, retain=True)
        deadline = time.monotonic() + TIMEOUT
        while info.mid not in self.acks:
            assert time.monotonic() < deadline, f"no PUBACK for {name}"
            time.sleep(0.01)
        assert self.acks[info.mid].value == 0

    def expect(self, name: str, payload: bytes, timeout: float = TIMEOUT) -> Msg:
        """The first message on TOPICS+name with this payload not expected before, in
        whatever order messages came (all are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.pending:
                if m.topic == TOPICS + name and m.payload == payload:
                    self.pending.remove(m)
                    return m
            try:
                m = self.got.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {name}={payload!r} within {timeout} s; got {self.seen}")
            self.seen.append(m)
            self.pending.append(m)

    def quiet(self, name: str, seconds: float) -> list[Msg]:
        """Messages on TOPICS+name that arrive within `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.got.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(m)
            if m.topic == TOPICS + name:
                out.append(m)
            else:
                self.pending.append(m)
        return out


@pytest.fixture
def controller(fleet: tuple[Fleet, Any]) -> Iterator[Controller]:
    """The room controller, after clearing what earlier tests left retained."""
    c = Controller(fleet[0]).start()
    for name in ("state", "door", "panel"):
        c.retain(name, b"")
    c.quiet("", 0.2)
    c.seen.clear()
    c.pending.clear()
    yield c
    c.close()


@pytest.fixture
def start_panel(
    fleet: tuple[Fleet, Any], controller: Controller, umqtt: Path, tmp_path: Path
) -> Iterator[Callable[..., Panel]]:
    """start_panel(ca=None, door=1, key=1, **board) -> the firmware running: panel-101's
    files from `enroll-panel` and a board.json in its working directory, input pins set."""
    started: list[Panel] = []

    def start(ca: bytes | None = None, door: int = 1, key: int = 1, **board: Any) -> Panel:
        enrolled = fleet[0].root / f"panel-{ROOM}"
        panel = launch_firmware(enrolled, tmp_path, umqtt, ca, {**BOARD, **board})
        started.append(panel)
        panel.set("door", door)
        panel.set("key", key)
        return panel

    yield start
    for p in started:
        p.proc.kill()
        p.proc.wait()


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_mpy_cross_compiles_the_firmware(tmp_path: Path) -> None:
    out = tmp_path / "main.mpy"
    done = subprocess.run(
        [str(tool("mpy-cross")), "-o", str(out), str(FIRMWARE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:1] == b"M"  # the .mpy header


@pytest.mark.slow
def test_panel_comes_online_and_publishes_the_door_retained(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel(door=1)
    controller.expect("panel", b"online")
    controller.expect("door", b"open")
    panel.set("door", 0)
    controller.expect("door", b"closed")
    # a subscriber arriving later gets both, retained
    late = Controller(fleet[0], "-late").start()
    try:
        late.expect("panel", b"online")
        late.expect("door", b"closed")
        assert all(m.retained for m in late.seen), late.seen
    finally:
        late.close()


@pytest.mark.slow
def test_key_switch_publishes_start_and_stop_not_retained(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("door", b"open")
    panel.set("key", 0)
    assert not controller.expect("key", b"start").retained
    panel.set("key", 1)
    controller.expect("key", b"stop")
    late = Controller(fleet[0], "-late").start()
    try:
        late.expect("door", b"open")
        assert late.quiet("key", 0.5) == []
    finally:
        late.close()


@pytest.mark.slow
def test_lamp_and_status_led_follow_the_controller_state(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("panel", b"online")
    assert panel.get("lamp") == 0
    panel.wait_blinking("led")  # connected, but no state from the controller yet
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    panel.steady_on("led")
    controller.retain("state", b"idle")
    panel.wait_level("lamp", 0)
    panel.steady_on("led")
    controller.retain("state", b"confirm")
    panel.wait_blinking("led")
    assert panel.get("lamp") == 0
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    controller.retain("state", b"fault")
    panel.wait_level("lamp", 0)
    panel.wait_blinking("led")
    controller.retain("state", b"no-such-state")
    panel.wait_blinking("led")
    assert panel.get("lamp") == 0


@pytest.mark.slow
def test_lamp_goes_dark_when_the_controller_stops_repeating_its_state(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    """A controller that died leaves `recording` retained at the broker; the panel must
    not keep the lamp lit on it once the repeats stop (how long, on a clock: above)."""
    panel = start_panel(state_stale=2)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    panel.wait_level("lamp", 0)  # no repeat for 2 s
    panel.wait_blinking("led")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)


@pytest.mark.slow
def test_last_will_says_offline_when_the_panel_dies(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("panel", b"online")
    panel.proc.kill()
    controller.expect("panel", b"offline")
    late = Controller(fleet[0], "-late").start()
    try:
        assert late.expect("panel", b"offline").retained
    finally:
        late.close()


@pytest.mark.slow
def test_panel_refuses_a_broker_its_ca_did_not_certify(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    _, rogue = pki.make_ca("Rogue", time.time())
    panel = start_panel(ca=pki.cert_der(rogue))
    panel.wait_for("two refused attempts", lambda: panel.log_text().count("connect failed") >= 2)
    assert "connected\n" not in panel.log_text()
    assert controller.quiet("panel", 0.3) == []
    assert panel.get("lamp") == 0
    panel.wait_blinking("led")


@pytest.mark.slow
def test_panel_reconnects_after_the_broker_restarts(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    f, broker = fleet
    panel = start_panel(door=0)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    broker.stop()
    try:
        panel.wait_level("lamp", 0)  # it cannot know any more
        panel.wait_blinking("led")
        assert "disconnected" in panel.log_text()
    finally:
        broker.start()
    # without persistence the broker lost every retained message: the panel republishes
    again = Controller(f, "-again").start()
    try:
        again.expect("panel", b"online")
        again.expect("door", b"closed")
        assert panel.get("lamp") == 0
        again.retain("state", b"recording")  # it subscribed again
        panel.wait_level("lamp", 1)
        panel.set("key", 0)
        again.expect("key", b"start")
    finally:
        again.close()


@pytest.mark.slow
def test_panel_gives_up_on_a_silent_broker_and_comes_back(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    """A path that dies without a word (Wi-Fi gone, a cable cut): the broker frozen. The
    panel notices the missing PINGRESP within its keepalive, and connects again."""
    broker = fleet[1]
    panel = start_panel(keepalive=2)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        panel.wait_level("lamp", 0)
        panel.wait_blinking("led")
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    panel.wait_level("lamp", 1)  # the retained state again, on a new connection
    controller.expect("panel", b"online")
    panel.set("key", 0)
    controller.expect("key", b"start")
    # the old connection's last will (if the broker sends it) came before `online`
    said = [m.payload for m in controller.seen if m.topic == TOPICS + "panel"]
    assert said[-1] == b"online", said

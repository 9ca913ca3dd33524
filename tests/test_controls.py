"""Buttons and the LED on gpiozero's MockFactory: the tests read like wiring."""

from __future__ import annotations

import time
from pathlib import Path

from common.archive.device_directory import load_chain
from common.settings import Controls as ControlsConfig
from device.controls import Settled
from evidence.seal import Entry
from simulator.device import SimDevice
from tests.fixtures.config import small_config


def _device(tmp_path: Path, hold: float = 2.0) -> SimDevice:
    cfg = small_config(prebuffer_seconds=2)
    cfg = cfg.model_copy(update={"controls": ControlsConfig(hold_seconds=hold)})
    dev = SimDevice(tmp_path / "dev", cfg)
    dev.start()
    return dev


def test_press_opens_and_a_bump_does_not_close(tmp_path: Path) -> None:
    dev = _device(tmp_path)
    dev.run(1)
    dev.press_record()
    dev.run(0.2)
    assert dev.recorder.status()["state"] == "recording"
    assert dev.led()
    dev.press_record()  # a bump: arms, does not close
    dev.run(0.2)
    assert dev.recorder.status()["close_armed"]
    dev.run(3.5)  # the confirmation window lapses
    assert dev.recorder.status()["state"] == "recording"
    assert not dev.recorder.status()["close_armed"]
    dev.press_record()
    dev.press_record()  # press and confirm
    dev.run(0.2)
    assert dev.recorder.status()["state"] == "buffering"
    assert not dev.led()
    dev.stop()


def test_the_session_opens_while_the_button_is_still_down(tmp_path: Path) -> None:
    """Opened on the press edge (once the contact settled), not on the release; the
    opening press held past hold_seconds does not close what it opened."""
    dev = _device(tmp_path, hold=0.15)
    dev.run(1)
    pin = dev.pins.pin(dev.config.controls.record_pin)
    pin.drive_low()
    time.sleep(dev.config.controls.bounce_seconds * 3)
    dev.run(0.1)
    assert dev.recorder.session is not None, "opened while the button is down"
    time.sleep(0.4)  # held past the hold time: gpiozero's hold fires
    dev.run(0.2)
    pin.drive_high()
    time.sleep(dev.config.controls.bounce_seconds * 3)
    dev.run(0.5)
    assert dev.recorder.session is not None, "its own hold did not close it"
    kinds = [e.kind for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    assert kinds.count("session_open") == 1 and "session_close" not in kinds
    dev.stop()


def test_long_press_closes(tmp_path: Path) -> None:
    dev = _device(tmp_path, hold=0.15)
    dev.press_record()
    dev.run(0.5)
    assert dev.recorder.session
    dev.press_record(seconds=0.4)  # held past hold_seconds (gpiozero's timer: real time)
    deadline = time.monotonic() + 5
    while dev.recorder.session and time.monotonic() < deadline:
        dev.run(0.1)
    assert dev.recorder.session is None
    kinds = [e.kind for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    assert kinds.count("session_open") == kinds.count("session_close") == 1
    dev.stop()


def test_marker_button_drops_a_marker_and_without_session_recording_goes_on(
    tmp_path: Path,
) -> None:
    dev = _device(tmp_path)
    dev.press_marker()  # no session: refused with a reason, nothing stops
    dev.run(0.5)
    assert "needs one" in (dev.recorder.last_error or "")
    dev.press_record()
    dev.run(0.5)
    dev.press_marker()
    dev.run(0.5)
    dev.recorder.close_session()
    dev.stop()
    markers = [
        e.body["type"]
        for _, e in load_chain(dev.recorder.root)
        if isinstance(e, Entry) and e.kind == "marker"
    ]
    assert markers == ["credential_shown"]


def test_led_warns_of_the_24_hour_deadline_when_not_recording(tmp_path: Path) -> None:
    dev = _device(tmp_path)
    dev.recorder.sync_deadline = "urgent"  # as the uploader reports it
    dev.run(0.2)
    assert dev.recorder.indicator == "deadline"
    dev.press_record()
    dev.run(0.2)
    assert dev.recorder.indicator == "on", "recording shows as recording"
    dev.recorder.close_session()
    dev.recorder.sync_deadline = "ok"
    dev.run(0.2)
    assert dev.recorder.indicator == "off"
    dev.stop()


def _chatter(dev: SimDevice, edges: int, settle_low: bool) -> None:
    """A contact that chatters: ``edges`` changes a millisecond or two apart (well within
    20 ms), ending pressed or released."""
    pin = dev.pins.pin(dev.config.controls.record_pin)
    low = False
    for _ in range(edges):
        low = not low
        (pin.drive_low if low else pin.drive_high)()
        time.sleep(0.002)
    if low != settle_low:
        (pin.drive_low if settle_low else pin.drive_high)()
    time.sleep(dev.config.controls.bounce_seconds * 3)  # settled


def test_a_chattering_contact_never_closes_a_session(tmp_path: Path) -> None:
    dev = _device(tmp_path)
    dev.press_record()
    dev.run(0.2)
    assert dev.recorder.status()["state"] == "recording"
    _chatter(dev, edges=4, settle_low=False)  # a knock: it chattered and let go
    dev.run(0.2)
    assert dev.recorder.status()["state"] == "recording"
    assert not dev.recorder.status()["close_armed"], "chatter is not a press"
    _chatter(dev, edges=3, settle_low=True)  # one real press, bouncing on the way down...
    _chatter(dev, edges=3, settle_low=False)  # ...and on the way up
    dev.run(0.2)
    st = dev.recorder.status()
    assert st["state"] == "recording" and st["close_armed"], "one press arms, never closes"
    dev.run(3.5)  # the window lapses
    dev.press_record()
    dev.press_record()  # a deliberate press and confirm still closes
    dev.run(0.2)
    assert dev.recorder.status()["state"] == "buffering"
    kinds = [e.kind for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    assert kinds.count("session_open") == kinds.count("session_close") == 1
    dev.stop()


def test_settling_tells_each_press_once_and_a_leading_press_at_its_edge() -> None:
    s = Settled()
    assert [s.settle(True), s.settle(True), s.settle(False)] == ["press", None, "release"]
    # leading (no session open): told at the first edge, bounces and settling add nothing
    assert [s.edge(True, leads=True), s.edge(False, True), s.edge(True, True)] == ["press"] + [
        None
    ] * 2
    assert s.settle(True) is None and s.settle(False) == "release"
    # a knock that leads is a press and a release; one that does not lead is nothing
    assert [s.edge(True, leads=True), s.settle(False)] == ["press", "release"]
    assert [s.edge(True, leads=False), s.settle(False)] == [None, None]


def test_idle_a_bouncing_press_opens_one_session_at_its_first_edge(tmp_path: Path) -> None:
    dev = _device(tmp_path)
    dev.run(0.2)  # the LED says no session: presses lead
    pin = dev.pins.pin(dev.config.controls.record_pin)
    pin.drive_low()  # the first edge opens, before the contact settled
    events: list[str] = []
    while not dev.recorder._events.empty():  # what the recorder has been told, so far
        events.append(dev.recorder._events.get_nowait())  # type: ignore[arg-type]
    assert events == ["record_press"]
    for e in events:
        dev.recorder.post(e)
    _chatter(dev, edges=3, settle_low=True)  # the rest of that press, bouncing
    _chatter(dev, edges=3, settle_low=False)  # and its release
    dev.run(0.2)
    st = dev.recorder.status()
    assert st["state"] == "recording" and not st["close_armed"], "the same press, told once"
    kinds = [e.kind for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    assert kinds.count("session_open") == 1
    dev.stop()

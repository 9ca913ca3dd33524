"""Buttons, the recording LED and the buzzer, through gpiozero.

On a Pi these drive real pins; in tests and the simulator the same classes run on
gpiozero's ``MockFactory``, and a button press is a mock pin driven low, exactly as the
switch would pull the real pin to ground.

Example::

    from gpiozero.pins.mock import MockFactory
    factory = MockFactory()
    events = []
    controls = Controls(ControlsConfig(), events.append, pin_factory=factory)
    factory.pin(17).drive_low(); time.sleep(0.05)    # settled down: the press
    factory.pin(17).drive_high(); time.sleep(0.05)   # settled up: the release
    assert events == ["record_press", "record_release"]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gpiozero import LED, Button, Buzzer

from common.settings import Controls as ControlsConfig

RECORD_PRESS = "record_press"  # the button went down (settled): a session opens on this edge
RECORD_RELEASE = "record_release"
RECORD_HOLD = "record_hold"
MARKER_PRESS = "marker_press"


class Settled:
    """Software debouncing: a switch's state counts once it has stayed put for
    ``bounce_seconds`` after its last edge (real switches bounce for 1-20 ms, so one press
    can give several edges). ``settle(pressed)`` is asked when that time has passed, with
    the pin's state then; it says whether a press or a release happened. Pure: no timers.

    Where a press costs nothing if it was a bounce — opening a session, when none is open —
    ``edge`` tells the press at its first edge (``leads``), without waiting for it to settle;
    the settling then adds nothing for that press, or a release if it was only a knock.

    Example::

        s = Settled()
        s.settle(True), s.settle(True), s.settle(False)   # ("press", None, "release")
        s.edge(True, leads=True), s.settle(True)          # ("press", None)
    """

    def __init__(self) -> None:
        self.pressed = False
        self.told = False  # a press told at its first edge, not yet settled

    def edge(self, pressed: bool, leads: bool) -> str | None:
        if leads and pressed and not self.pressed and not self.told:
            self.told = True
            return "press"
        return None

    def settle(self, pressed: bool) -> str | None:
        told, self.told = self.told, False
        if pressed == self.pressed:
            # the edges were bounces: it is where it was (a knock, if its press was told)
            return "release" if told and not pressed else None
        self.pressed = pressed
        if told and pressed:
            return None  # the press was told at its edge
        return "press" if pressed else "release"


class DebouncedButton:
    """A push button to ground whose press and release are reported once per real press,
    however much the contact chatters: every edge restarts a ``bounce_seconds`` timer, and
    only the state the pin settled in counts — except a press that ``leads`` (see
    :class:`Settled`), told at its first edge. The hold (a deliberate long press) is
    gpiozero's timer on the raw pin, which chatter cannot fool either."""

    def __init__(
        self,
        pin: int,
        bounce_seconds: float,
        on_change: Callable[[str], None],
        hold_seconds: float | None = None,
        pin_factory: Any = None,
    ) -> None:
        kw: dict[str, Any] = {"hold_time": hold_seconds} if hold_seconds else {}
        self.button = Button(pin, pull_up=True, pin_factory=pin_factory, **kw)
        self.bounce_seconds = bounce_seconds
        self._on_change = on_change
        self._state = Settled()
        self.leads = False  # whether a press is told at its first edge
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.button.when_pressed = lambda: self._edge(True)
        self.button.when_released = lambda: self._edge(False)

    def _edge(self, pressed: bool) -> None:
        with self._lock:
            change = self._state.edge(pressed, self.leads)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.bounce_seconds, self._settled)
            self._timer.daemon = True
            self._timer.start()
        if change is not None:
            self._on_change(change)

    def _settled(self) -> None:
        with self._lock:
            change = self._state.settle(bool(self.button.is_pressed))
        if change is not None:
            self._on_change(change)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self.button.close()


class Controls:
    """The officer's controls. ``on_event`` is called from gpiozero's and the debouncing
    timers' threads: keep it cheap (the recorder only queues the event)."""

    def __init__(
        self,
        cfg: ControlsConfig,
        on_event: Callable[[str], None],
        pin_factory: Any = None,
    ) -> None:
        self._on_event = on_event
        self._record = DebouncedButton(
            cfg.record_pin, cfg.bounce_seconds, self._record_change, cfg.hold_seconds, pin_factory
        )
        self._record.leads = True  # no session open yet: a press opens one at its edge
        self.record = self._record.button
        self._marker = DebouncedButton(
            cfg.marker_pin, cfg.bounce_seconds, self._marker_change, pin_factory=pin_factory
        )
        self.marker = self._marker.button
        self.led = LED(cfg.record_led_pin, pin_factory=pin_factory)
        self.buzzer = Buzzer(cfg.buzzer_pin, pin_factory=pin_factory)
        self.record.when_held = self._record_held
        self._led_state = "off"

    def _record_held(self) -> None:
        self._on_event(RECORD_HOLD)

    def _record_change(self, change: str) -> None:
        self._on_event(RECORD_PRESS if change == "press" else RECORD_RELEASE)

    def _marker_change(self, change: str) -> None:
        if change == "press":
            self._on_event(MARKER_PRESS)

    def show(self, led: str) -> None:
        """Recording LED: "on" while recording, "blink" while a close awaits confirmation,
        "prompt" (fast blink and three beeps) when a gap must be explained. Not recording
        (off, deadline), a press of the record button opens a session at its first edge:
        a bounce then costs nothing, while a press that could close waits to settle."""
        self._record.leads = led in ("off", "deadline")
        if led == self._led_state:
            return
        self._led_state = led
        if led == "on":
            self.led.on()
        elif led == "blink":
            self.led.blink(on_time=0.2, off_time=0.2)
        elif led == "prompt":  # recording resumed after a gap: say why, now
            self.led.blink(on_time=0.05, off_time=0.05)
            self.beep(3)
        elif led == "deadline":  # footage nears its 24 hours without reaching the agency
            self.led.blink(on_time=1.0, off_time=1.0)
            self.beep(2)
        else:
            self.led.off()

    def beep(self, times: int = 1) -> None:
        self.buzzer.blink(on_time=0.08, off_time=0.08, n=times)

    def close(self) -> None:
        self._record.close()
        self._marker.close()
        for dev in (self.led, self.buzzer):
            dev.close()


class RecordingLamp:
    """The RECORDING lamp outside an interview room's door, wired to the controller: lit
    exactly while the room records (the room panel's lamp follows the same state)."""

    def __init__(self, pin: int, pin_factory: Any = None) -> None:
        self.led = LED(pin, pin_factory=pin_factory)

    def show(self, recording: bool) -> None:
        if recording != self.led.is_lit:
            self.led.value = recording

    def close(self) -> None:
        self.led.close()

"""Buttons, the recording LED and the buzzer, through gpiozero.

On a Pi these drive real pins; in tests and the simulator the same classes run on
gpiozero's ``MockFactory``, and a button press is a mock pin driven low, exactly as the
switch would pull the real pin to ground.

Example::

    from gpiozero.pins.mock import MockFactory
    factory = MockFactory()
    events = []
    controls = Controls(ControlsConfig(), events.append, pin_factory=factory)
    factory.pin(17).drive_low(); factory.pin(17).drive_high()
    assert events == ["record_press"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero import LED, Button, Buzzer

from common.settings import Controls as ControlsConfig

RECORD_PRESS = "record_press"
RECORD_HOLD = "record_hold"
MARKER_PRESS = "marker_press"


class Controls:
    """The officer's controls. ``on_event`` is called from gpiozero's threads: keep it cheap
    (the recorder only queues the event)."""

    def __init__(
        self,
        cfg: ControlsConfig,
        on_event: Callable[[str], None],
        pin_factory: Any = None,
    ) -> None:
        self._on_event = on_event
        self._held = False
        self.record = Button(
            cfg.record_pin, pull_up=True, hold_time=cfg.hold_seconds, pin_factory=pin_factory
        )
        self.marker = Button(cfg.marker_pin, pull_up=True, pin_factory=pin_factory)
        self.led = LED(cfg.record_led_pin, pin_factory=pin_factory)
        self.buzzer = Buzzer(cfg.buzzer_pin, pin_factory=pin_factory)
        self.record.when_held = self._record_held
        self.record.when_released = self._record_released
        self.marker.when_pressed = lambda: on_event(MARKER_PRESS)
        self._led_state = "off"

    def _record_held(self) -> None:
        self._held = True
        self._on_event(RECORD_HOLD)

    def _record_released(self) -> None:
        if not self._held:
            self._on_event(RECORD_PRESS)
        self._held = False

    def show(self, led: str) -> None:
        """Recording LED: "on" while recording, "blink" while a close awaits confirmation,
        "prompt" (fast blink and three beeps) when a gap must be explained."""
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
        for dev in (self.record, self.marker, self.led, self.buzzer):
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

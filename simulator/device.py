"""A simulated body-worn recorder or interview-room controller: the real
:class:`~agent.recorder.Recorder` on simulated cameras (one per track), microphone, GNSS
route, battery and gpiozero mock pins (buttons, LEDs, a room's RECORDING lamp).

Time runs *fast* by default: the simulator advances a :class:`~device.clock.SimClock` one
frame interval per frame, so a session of N seconds takes as long as encoding N seconds of
video. ``realtime=True`` paces frames against the wall clock instead.

Example::

    dev = SimDevice(Path("/tmp/bwc"), config)
    dev.start()
    dev.press_record()               # drives the mock pin low, then high
    dev.run(10)                      # ten seconds of footage
    dev.press_record(); dev.press_record()   # press, then confirm: closes
    dev.run(0.2)
    dev.stop()
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from agent.recorder import Hardware, Recorder
from agent.run import show_state
from agent.sync import Uploader
from common.settings import MAIN_TRACK, DeviceConfig
from device.camera import SimCamera
from device.clock import Clock, SimClock
from device.controls import Controls, RecordingLamp
from device.gnss import NmeaReplay
from device.microphone import SimMicrophone
from device.power import SimBattery
from device.storage import SimStorage


def shipped_route() -> Path:
    return Path(str(resources.files("simulator") / "routes" / "hefei-foot-patrol.nmea"))


def sim_cameras(config: DeviceConfig, clock: Clock) -> dict[str, SimCamera]:
    """One simulated camera per camera track, each with its own colours."""
    rec = config.recording
    names = config.room.cameras if config.room else [MAIN_TRACK]
    return {
        name: SimCamera(rec.width, rec.height, rec.fps, clock, tint=i)
        for i, name in enumerate(names)
    }


class SimDevice:
    def __init__(
        self,
        root: Path,
        config: DeviceConfig,
        clock: SimClock | None = None,
        realtime: bool = False,
    ) -> None:
        self.clock = clock or SimClock()
        self.config = config
        self.realtime = realtime
        rec = config.recording
        self.cameras = sim_cameras(config, self.clock)
        self.camera = next(iter(self.cameras.values()))  # a body recorder's one camera
        self.microphone = SimMicrophone(rec.audio_rate)
        route = config.gnss.route or shipped_route()
        self.gnss = NmeaReplay(route, self.clock, loop=True)
        self.battery = SimBattery(self.clock)
        self.storage = SimStorage(Path(root), capacity=64 * 1024**3)
        self.pins = MockFactory()
        hardware = Hardware(self.cameras, self.microphone, self.gnss, self.battery, self.storage)
        self.recorder = Recorder(root, config, hardware, self.clock)
        self.controls = Controls(config.controls, self.recorder.post, pin_factory=self.pins)
        self.uploader: Uploader | None = None  # attach one: status and panel follow it
        self.lamp = (
            RecordingLamp(config.room.lamp_pin, pin_factory=self.pins) if config.room else None
        )

    def start(self) -> None:
        self.recorder.start()

    def stop(self) -> None:
        if not self.recorder.powered_off:
            self.recorder.stop()
        self.controls.close()
        if self.lamp:
            self.lamp.close()
        self.gnss.close()

    # -- what a tester does with the hardware ----------------------------------------

    def press(self, pin: int, seconds: float = 0.05) -> None:
        """Press and release a button wired to ``pin`` (active low, as on the board)."""
        p = self.pins.pin(pin)
        p.drive_low()
        if seconds > 0.05:
            time.sleep(seconds)  # gpiozero's hold timer runs on real time
        p.drive_high()

    def press_record(self, seconds: float = 0.05) -> None:
        self.press(self.config.controls.record_pin, seconds)

    def press_marker(self) -> None:
        self.press(self.config.controls.marker_pin)

    def led(self) -> bool:
        return bool(self.pins.pin(self.config.controls.record_led_pin).state)

    def lamp_lit(self) -> bool:
        """The room's RECORDING lamp (a room controller only)."""
        assert self.config.room, "a body recorder has no RECORDING lamp"
        return bool(self.pins.pin(self.config.room.lamp_pin).state)

    def run(self, seconds: float) -> None:
        """Record ``seconds`` of device time, one frame at a time."""
        fps = self.config.recording.fps
        frames = round(seconds * fps)
        t0 = time.monotonic()
        for i in range(frames):
            self.recorder.step()
            self.controls.show(self.recorder.indicator)
            show_state(self.recorder, self.uploader, self.lamp)
            if self.realtime:
                delay = t0 + (i + 1) / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.clock.advance(1 / fps)

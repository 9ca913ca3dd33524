"""A simulated body-worn recorder or interview-room controller: the real
:class:`~agent.recorder.Recorder` on simulated cameras (one per track), microphone, GNSS
route, battery and gpiozero mock pins (buttons, LEDs, a room's RECORDING lamp).

The hardware comes from :class:`~device.hardware.SimFactory`; :attr:`SimDevice.hardware`
keeps its parts, whose fault switches a tester flips (``dev.camera.fail()``). The frames
are stepped by the one frame loop (:class:`~agent.loop.FrameLoop`).

Time runs *fast* by default: the simulator advances a :class:`~device.clock.SimClock` one
frame interval per frame, so a session of N seconds takes as long as encoding N seconds of
video. ``realtime=True`` paces frames against the wall clock instead.

Footage is encrypted as on a real device. A simulated device that was never given an
agency's bundle encrypts to a stand-in agency key kept *beside* its data directory
(:func:`stand_in_agency_key`: ``/tmp/bwc.agency-evidence.key`` for ``/tmp/bwc``), never in
it, so what it records can be exported and checked like an agency's.

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

import threading
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import nacl.public

from agent.at_rest import installed_evidence_key
from agent.loop import FrameLoop
from agent.recorder import Recorder
from agent.sync import Uploader
from common.files import write_atomic
from common.settings import DeviceConfig
from device.camera import SimCamera
from device.clock import SimClock
from device.controls import Controls, RecordingLamp
from device.hardware import SIM_CARD, SimFactory, SimHardware
from device.microphone import SimMicrophone
from device.nmea_replay import SimGnss
from device.power import SimBattery
from device.storage import SimStorage


def stand_in_agency_key(root: Path) -> nacl.public.PrivateKey:
    """The evidence key a simulated device without a bundle encrypts to, made on first use
    beside its data directory (0600): what an agency would hold, for exports and checks."""
    path = root.parent / f"{root.name}.agency-evidence.key"
    try:
        return nacl.public.PrivateKey(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        key = nacl.public.PrivateKey.generate()
        root.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, bytes(key).hex().encode() + b"\n", mode=0o600)
        return key


def simulated_evidence_key(root: Path, config: DeviceConfig) -> nacl.public.PublicKey | None:
    """The key a simulated device encrypts to: its bundle's if it has one, else the
    stand-in agency's (None: its settings turn encryption off, or the bundle decides)."""
    if not config.storage.encrypt or installed_evidence_key(root) is not None:
        return None
    return stand_in_agency_key(root).public_key


def shipped_route() -> Path:
    return Path(str(resources.files("simulator") / "routes" / "hefei-foot-patrol.nmea"))


def sim_factory(
    battery_drain_per_hour: float = 8.0, storage_capacity: int | None = SIM_CARD
) -> SimFactory:
    """The simulator's hardware factory: the shipped route unless the settings name one, a
    battery draining this much an hour, a card of this size (None: the real disk)."""
    return SimFactory(shipped_route(), battery_drain_per_hour, storage_capacity)


class SimDevice:
    """``factory``: the simulated hardware (default: a 64 GiB card, a battery draining
    8 % an hour); :attr:`hardware` keeps its parts, with their fault switches."""

    def __init__(
        self,
        root: Path,
        config: DeviceConfig,
        clock: SimClock | None = None,
        realtime: bool = False,
        factory: SimFactory | None = None,
        seal_in_background: bool | None = None,
    ) -> None:
        self.clock = clock or SimClock()
        self.config = config
        self.realtime = realtime
        factory = factory or sim_factory()
        self.hardware: SimHardware = factory.build(config, Path(root), self.clock)
        self.pins = factory.pins
        self.recorder = Recorder(
            root,
            config,
            self.hardware,
            self.clock,
            simulated_evidence_key(Path(root), config),
            # as the device in real time: the frame loop never waits for sealing
            seal_in_background=realtime if seal_in_background is None else seal_in_background,
        )
        self.controls = Controls(config.controls, self.recorder.post, pin_factory=self.pins)
        self.uploader: Uploader | None = None  # attach one: status and panel follow it
        self.lamp = (
            RecordingLamp(config.room.lamp_pin, pin_factory=self.pins) if config.room else None
        )

    # the simulated parts, as tests and testers reach them
    @property
    def cameras(self) -> Mapping[str, SimCamera]:
        return self.hardware.cameras

    @property
    def camera(self) -> SimCamera:
        """A body recorder's one camera (a room's first)."""
        return next(iter(self.hardware.cameras.values()))

    @property
    def microphone(self) -> SimMicrophone:
        return self.hardware.microphone

    @property
    def gnss(self) -> SimGnss:
        return self.hardware.gnss

    @property
    def battery(self) -> SimBattery:
        return self.hardware.battery

    @property
    def storage(self) -> SimStorage:
        return self.hardware.storage

    def start(self) -> None:
        self.recorder.start()

    def stop(self) -> None:
        if not self.recorder.powered_off:
            self.recorder.stop()
        self.controls.close()
        if self.lamp:
            self.lamp.close()
        self.gnss.close()

    def frame_loop(
        self,
        max_lag: float | None = None,
        on_frame: Callable[[int], object] | None = None,
        stop: threading.Event | None = None,
    ) -> FrameLoop:
        """The frame loop over this device's recorder, LED, lamp and uploader, on its clock
        (the options: :class:`~agent.loop.FrameLoop`'s)."""
        return FrameLoop(
            self.recorder,
            self.config.recording.fps,
            controls=self.controls,
            lamp=self.lamp,
            uploader=self.uploader,
            clock=self.clock,
            realtime=self.realtime,
            max_lag=max_lag,
            on_frame=on_frame,
            stop=stop,
        )

    # -- what a tester does with the hardware ----------------------------------------
    def press(self, pin: int, seconds: float = 0.05) -> None:
        """Press and release a button wired to ``pin`` (active low, as on the board), held
        ``seconds`` of real time (the debouncing and gpiozero's hold timer run on it), and
        return once the contact has settled after the release."""
        settle = self.config.controls.bounce_seconds * 2
        p = self.pins.pin(pin)
        p.drive_low()
        time.sleep(max(seconds, settle))
        p.drive_high()
        time.sleep(settle)

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
        self.frame_loop().run(frames=round(seconds * self.config.recording.fps))

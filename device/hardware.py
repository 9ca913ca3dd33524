"""A recorder's hardware, built in one place from the device's settings.

The recorder records from a :class:`Hardware` bundle of ports. A factory builds the bundle,
as gpiozero's pin factories build pins: :class:`SimFactory` on simulated backends, each
with the fault switches a tester flips, so that the recorder cannot tell a broken
simulated camera from a broken sensor; :class:`BoardFactory` on the board's own backends
(the seam where the real ones plug in). Either also gives the gpiozero pin factory the
buttons, LEDs and a room's RECORDING lamp run on.

Example::

    hw = SimFactory(route=Path("patrol.nmea")).build(config, root, clock)
    recorder = Recorder(root, config, hw, clock)
    hw.cameras["main"].fail()       # the next frame is a camera fault, as on a board
    hw.battery.set(percent=4)       # below critical: the recorder shuts down
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from common.hardware_settings import CameraSource, HardwareSettings
from common.settings import MAIN_TRACK, DeviceConfig
from device.camera import Camera, CameraError, SimCamera
from device.clock import Clock, SystemClock
from device.gnss import Gnss, NoGnss
from device.gpsd import GpsdClient
from device.microphone import Microphone, MicrophoneError, SimMicrophone
from device.nmea_replay import NmeaReplay, SimGnss
from device.power import Battery, SimBattery
from device.storage import DiskStorage, SimStorage, Storage

if TYPE_CHECKING:
    from gpiozero import Factory
    from gpiozero.pins.mock import MockFactory

log = logging.getLogger(__name__)

SIM_CARD = 64 * 1024**3  # bytes: a body recorder's memory card


class HardwareError(RuntimeError):
    """The hardware cannot be built as asked; its text says why, for the command line."""


@dataclass(frozen=True)
class Hardware:
    """What the recorder records from. ``cameras``: one per camera track, by track name —
    ``{"main": camera}`` on a body recorder, the room's cameras on a room controller."""

    cameras: Mapping[str, Camera]
    microphone: Microphone
    gnss: Gnss
    battery: Battery | None = None
    storage: Storage | None = None


@dataclass(frozen=True)
class SimHardware(Hardware):
    """Simulated hardware: the same ports, each backend with its fault switches."""

    cameras: Mapping[str, SimCamera]
    microphone: SimMicrophone
    gnss: SimGnss
    battery: SimBattery
    storage: SimStorage


class HardwareFactory(Protocol):
    """Builds a device's hardware from its settings."""

    def build(self, config: DeviceConfig, root: Path, clock: Clock) -> Hardware: ...

    @property
    def pins(self) -> Factory | None:
        """The gpiozero pin factory (None: gpiozero's default, the board's pins)."""


def camera_tracks(config: DeviceConfig) -> list[str]:
    """The camera tracks: the room's cameras on a room controller, else the one main track."""
    return list(config.room.cameras) if config.room else [MAIN_TRACK]


class SimFactory:
    """Simulated backends: a camera per camera track (each with its own colours), a tone
    for a microphone, a receiver walking ``route`` (unless the settings name one), a
    battery draining ``battery_drain_per_hour`` percent per hour, a volume of
    ``storage_capacity`` bytes (None: the real disk) and gpiozero's mock pins."""

    def __init__(
        self,
        route: Path,
        battery_drain_per_hour: float = 8.0,
        storage_capacity: int | None = SIM_CARD,
    ) -> None:
        from gpiozero.pins.mock import MockFactory

        self.route = route
        self.battery_drain_per_hour = battery_drain_per_hour
        self.storage_capacity = storage_capacity
        self._pins = MockFactory()

    @property
    def pins(self) -> MockFactory:
        return self._pins

    def build(self, config: DeviceConfig, root: Path, clock: Clock) -> SimHardware:
        if config.gnss.backend != "replay":
            raise HardwareError(
                f"gnss.backend = {config.gnss.backend!r}: simulated hardware simulates the "
                "receiver (backend 'replay'); a real receiver is for agent run without --sim"
            )
        if config.hardware != HardwareSettings():
            log.warning(
                "[hardware] names the real device's backends; simulated hardware simulates "
                "every port, so those settings are not used here"
            )
        rec = config.recording
        cameras = {
            name: SimCamera(rec.width, rec.height, rec.fps, clock, tint=i)
            for i, name in enumerate(camera_tracks(config))
        }
        return SimHardware(
            cameras=cameras,
            microphone=SimMicrophone(rec.audio_rate),
            gnss=SimGnss(config.gnss.route or self.route, clock, loop=True),
            battery=SimBattery(clock, drain_per_hour=self.battery_drain_per_hour),
            storage=SimStorage(Path(root), capacity=self.storage_capacity),
        )


class BoardFactory:
    """The board's own backends, chosen by the ``[hardware]`` and ``[gnss]`` settings: a
    camera per track (the Pi camera, a USB camera or a network camera), the ALSA microphone,
    gpsd or a serial receiver, the battery in sysfs, the disk, and GPIO pins (gpiozero's
    default factory). Whatever cannot be had is a :class:`HardwareError` at start naming
    the setting and what is missing, never a half-built device."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config

    @property
    def pins(self) -> None:
        return None

    def clock(self) -> Clock:
        if self.config.hardware.clock == "kernel":
            from device.kernel_clock import KernelClock

            return KernelClock()
        return SystemClock()

    def build(self, config: DeviceConfig, root: Path, clock: Clock) -> Hardware:
        hw = config.hardware
        tracks = camera_tracks(config)
        if unknown := sorted(set(hw.cameras) - set(tracks)):
            raise HardwareError(
                f"hardware.cameras.{unknown[0]}: no such camera track (tracks: {', '.join(tracks)})"
            )
        cameras = {track: self._camera(track, config, clock) for track in tracks}
        try:
            from device.alsa import AlsaMicrophone

            microphone = AlsaMicrophone(hw.microphone.device, config.recording.audio_rate)
        except (MicrophoneError, OSError, ValueError) as e:
            raise HardwareError(f"hardware.microphone: {e}") from None
        return Hardware(
            cameras=cameras,
            microphone=microphone,
            gnss=self._gnss(config, clock),
            battery=self._battery(config),
            storage=DiskStorage(root),
        )

    def _camera(self, track: str, config: DeviceConfig, clock: Clock) -> Camera:
        rec = config.recording
        source = config.hardware.cameras.get(track)
        if source is None:
            if config.room is not None:
                raise HardwareError(
                    f"hardware.cameras.{track}: no camera configured for the room's track "
                    f'{track!r} (e.g. backend = "rtsp", url = "rtsp://camera/stream")'
                )
            source = CameraSource()  # a body recorder: its Pi camera
        where = f"hardware.cameras.{track}"
        try:
            if source.backend == "picamera":
                from device.picamera import Picamera2Camera, require_picamera2

                try:
                    require_picamera2()
                except CameraError as e:
                    raise HardwareError(f"{where}: backend 'picamera': {e}") from None
                return Picamera2Camera(
                    rec.width, rec.height, rec.fps, clock, source.camera_num,
                    timeout=source.timeout,
                )  # fmt: skip
            if source.backend == "v4l2":
                from device.v4l2 import V4l2Camera

                assert source.device is not None  # the settings' validator saw to it
                return V4l2Camera(
                    str(source.device), rec.width, rec.height, rec.fps, clock,
                    input_format=source.input_format, timeout=source.timeout,
                )  # fmt: skip
            from device.rtsp import RtspCamera

            assert source.url is not None
            return RtspCamera(
                source.url, rec.width, rec.height, rec.fps, clock, timeout=source.timeout
            )
        except (ValueError, OSError) as e:
            raise HardwareError(f"{where}: {e}") from None

    def _gnss(self, config: DeviceConfig, clock: Clock) -> Gnss:
        g = config.gnss
        if g.backend == "gpsd":
            return GpsdClient(clock, g.gpsd_host, g.gpsd_port)
        if g.backend == "serial":
            from device.nmea_serial import SerialNmeaReceiver

            assert g.serial_device is not None
            try:
                return SerialNmeaReceiver(str(g.serial_device), clock, baud=g.serial_baud)
            except (ValueError, OSError) as e:
                raise HardwareError(f"gnss.serial_device: {e}") from None
        if g.backend == "replay":
            if g.route is None:
                raise HardwareError(
                    "gnss: backend 'replay' on a real device needs a route (gnss.route); "
                    "a receiver is backend 'gpsd' or 'serial'"
                )
            return NmeaReplay(g.route, clock, loop=True)
        return NoGnss()

    def _battery(self, config: DeviceConfig) -> Battery:
        b = config.hardware.battery
        from device.power_supply import NoBattery, SysfsBattery

        if b.backend == "none":
            return NoBattery()
        try:
            return SysfsBattery(b.name, b.root)
        except (ValueError, OSError) as e:
            raise HardwareError(
                f'hardware.battery: {e} (a mains-powered device: backend = "none")'
            ) from None

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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from common.settings import MAIN_TRACK, DeviceConfig
from device.camera import Camera, SimCamera
from device.clock import Clock
from device.gnss import Gnss, SimGnss
from device.microphone import Microphone, SimMicrophone
from device.power import Battery, SimBattery
from device.storage import SimStorage, Storage

if TYPE_CHECKING:
    from gpiozero import Factory
    from gpiozero.pins.mock import MockFactory

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
    """The board's own backends: the Pi camera, GPIO and gpsd exist; a microphone does not
    yet, so building refuses with the reason."""

    @property
    def pins(self) -> None:
        return None

    def build(self, config: DeviceConfig, root: Path, clock: Clock) -> Hardware:
        raise HardwareError(
            "real hardware needs a microphone backend, which is not written yet: "
            "run with --sim (the Pi camera, GPIO and gpsd backends exist: device/picamera.py, "
            "device/controls.py, device/gnss.py)"
        )

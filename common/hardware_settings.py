"""Device settings of the real hardware: where positions, each camera track's picture,
the microphone and the battery come from, and which clock says it is synced. Part of
:class:`common.settings.DeviceConfig` (``[gnss]`` and ``[hardware]`` in device.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from evidence.models import Strict as _Strict


class Gnss(_Strict):
    backend: Literal["replay", "gpsd", "serial", "none"] = Field(
        "replay",
        description="replay: an NMEA route (the simulator); gpsd: the gpsd daemon; serial: an "
        "NMEA receiver on a tty; none: no receiver (a room: every position is 'no fix').",
    )
    route: Path | None = Field(None, description="NMEA file to replay; None: the shipped route.")
    gpsd_host: str = Field("127.0.0.1", description="backend gpsd: its host.")
    gpsd_port: int = Field(2947, ge=1, le=65535, description="backend gpsd: its port.")
    serial_device: Path | None = Field(None, description="backend serial: e.g. /dev/ttyAMA0.")
    serial_baud: int = Field(9600, description="backend serial: the receiver's baud rate.")

    @model_validator(mode="after")
    def _used_keys(self) -> Gnss:
        if self.backend == "serial" and self.serial_device is None:
            raise ValueError("backend 'serial' needs serial_device (e.g. /dev/ttyAMA0)")
        if self.backend != "serial" and self.serial_device is not None:
            raise ValueError(f"serial_device is for backend 'serial', not {self.backend!r}")
        if self.backend != "replay" and self.route is not None:
            raise ValueError(f"route is for backend 'replay', not {self.backend!r}")
        return self


class CameraSource(_Strict):
    """Where one camera track's picture comes from, on a real device."""

    backend: Literal["picamera", "v4l2", "rtsp"] = Field(
        "picamera",
        description="picamera: a Raspberry Pi camera module; v4l2: a USB camera; rtsp: a "
        "network camera (an interview room's usual camera).",
    )
    camera_num: int = Field(0, ge=0, le=7, description="picamera: which camera connector.")
    device: Path | None = Field(None, description="v4l2: the device node, e.g. /dev/video0.")
    input_format: str | None = Field(None, description="v4l2: e.g. 'mjpeg' (None: the default).")
    url: str | None = Field(None, description="rtsp: rtsp://[user:password@]host[:port]/path.")
    timeout: float = Field(
        2.0, gt=0, le=60, description="No frame for this long is a camera fault (interruption)."
    )

    @model_validator(mode="after")
    def _used_keys(self) -> CameraSource:
        needs = {"v4l2": "device", "rtsp": "url"}
        for backend, key in needs.items():
            given = getattr(self, key) is not None
            if self.backend == backend and not given:
                raise ValueError(f"backend {backend!r} needs {key}")
            if self.backend != backend and given:
                raise ValueError(f"{key} is for backend {backend!r}, not {self.backend!r}")
        if self.input_format is not None and self.backend != "v4l2":
            raise ValueError(f"input_format is for backend 'v4l2', not {self.backend!r}")
        if self.camera_num and self.backend != "picamera":
            raise ValueError(f"camera_num is for backend 'picamera', not {self.backend!r}")
        return self


class MicrophoneSource(_Strict):
    backend: Literal["alsa"] = Field("alsa", description="alsa: an ALSA capture device.")
    device: str = Field("default", description="ALSA device name: default, hw:1,0, a PCM name.")


class BatterySource(_Strict):
    backend: Literal["sysfs", "none"] = Field(
        "sysfs",
        description="sysfs: Linux power_supply (UPS HATs, fuel gauges); none: mains-powered.",
    )
    name: str | None = Field(None, description="sysfs: which supply (None: the only battery).")
    root: Path = Field(Path("/sys/class/power_supply"), description="sysfs: where to look.")

    @model_validator(mode="after")
    def _used_keys(self) -> BatterySource:
        if self.backend == "none" and self.name is not None:
            raise ValueError("name is for backend 'sysfs'")
        return self


class HardwareSettings(_Strict):
    """The real device's backends (``agent run`` without ``--sim``; the simulator ignores
    this section and says so). Each camera track names its source."""

    cameras: dict[str, CameraSource] = Field(
        default_factory=dict,
        description="By track: 'main' on a body recorder (default: the Pi camera); each of a "
        "room's cameras (no default: say where each comes from).",
    )
    microphone: MicrophoneSource = MicrophoneSource()
    battery: BatterySource = BatterySource()
    clock: Literal["kernel", "system"] = Field(
        "kernel", description="kernel: the sync state from adjtimex; system: never synced."
    )
    gpio: bool = Field(
        True, description="Buttons, LED, buzzer and a room's lamp on GPIO (false: none here)."
    )

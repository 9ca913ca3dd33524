"""The V4L2 camera, as far as a machine without a camera can test it: PyAV's FFmpeg has
the V4L2 input, a missing or wrong device is an error naming it, and a device node that is
no camera is a fault naming the cause, not a hang. Reading frames from a real USB camera is
not tested here."""

from __future__ import annotations

import time
from pathlib import Path

import av
import pytest

from device.camera import CameraError
from device.clock import SystemClock
from device.v4l2 import V4l2Camera


def test_the_wheels_ffmpeg_has_the_v4l2_input() -> None:
    assert any("v4l2" in name.split(",") for name in av.formats_available)


def test_a_missing_device_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="no V4L2 camera /dev/video97"):
        V4l2Camera("/dev/video97", 640, 480, 30, SystemClock())


def test_a_file_is_not_a_camera(tmp_path: Path) -> None:
    path = tmp_path / "video0"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{path} is not a V4L2 camera"):
        V4l2Camera(str(path), 640, 480, 30, SystemClock())


def test_a_device_that_is_no_camera_is_a_fault_naming_it() -> None:
    cam = V4l2Camera("/dev/null", 640, 480, 30, SystemClock(), timeout=0.3, retry_initial=0.1)
    cam.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with pytest.raises(CameraError) as info:
                cam.read()
            if "no frame for" in str(info.value) or time.monotonic() > deadline:
                break
    finally:
        cam.stop()
    assert "/dev/null" in str(info.value) and "cannot open the stream" in str(info.value)


def test_a_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="positive size"):
        V4l2Camera("/dev/null", 0, 480, 30, SystemClock())

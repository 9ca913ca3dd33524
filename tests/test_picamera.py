"""The picamera2 backend, against the fake picamera2 in tests/fixtures/fake_picamera2.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from device import picamera, yuv
from device.camera import CameraError
from device.clock import SimClock
from device.picamera import Picamera2Camera
from tests.fixtures.fake_picamera2 import BOOT_NS, Picamera2, make_module, scene_yuv420

# 40 px of YUV420 luma is padded to a 64-byte stride (chroma 20 to 32): exercises the padding.
W, H, FPS = 40, 30, 30


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[Picamera2]:
    """Installs a fresh fake as ``picamera2``; returns its Picamera2 class."""
    module, cls = make_module(attached_cameras=2)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return cls


def started(fake: type[Picamera2], clock: SimClock | None = None, **kw: int) -> Picamera2Camera:
    cam = Picamera2Camera(W, H, FPS, clock or SimClock(), **kw)
    cam.start()
    return cam


def test_configures_size_format_and_a_fixed_frame_duration(fake_picamera2: type[Picamera2]) -> None:
    started(fake_picamera2, camera_num=1)
    fake = fake_picamera2.opened[-1]
    assert fake.camera_num == 1
    assert fake.video_configuration_calls == [
        {
            "main": {"size": (W, H), "format": "YUV420"},
            "lores": None,
            "raw": None,
            "controls": {"FrameDurationLimits": (33_333, 33_333)},
        }
    ]
    config = fake.camera_configuration()
    assert config is not None
    assert config["main"]["size"] == (W, H) and config["main"]["format"] == "YUV420"
    # Ours override picamera2's default limits rather than sitting beside them.
    assert config["controls"]["FrameDurationLimits"] == (33_333, 33_333)
    assert fake.started


def test_frame_duration_follows_fps(fake_picamera2: type[Picamera2]) -> None:
    Picamera2Camera(W, H, 25, SimClock()).start()
    config = fake_picamera2.opened[-1].camera_configuration()
    assert config is not None
    assert config["controls"]["FrameDurationLimits"] == (40_000, 40_000)


def test_frames_come_back_yuv420_without_the_stride_padding(
    fake_picamera2: type[Picamera2],
) -> None:
    cam = started(fake_picamera2)
    config = fake_picamera2.opened[-1].camera_configuration()
    assert config is not None and config["main"]["stride"] == 64  # padded rows
    for n in (0, 1):
        planes = yuv.planes(cam.read().image)
        for got, want in zip(planes, scene_yuv420(W, H, n), strict=True):
            assert np.array_equal(got, want)
    # U and V in their places: the colour of the scene's corner comes back.
    rgb = yuv.to_rgb(started(fake_picamera2).read().image)
    assert np.abs(rgb[0, 0].astype(int) - [210, 120, 30]).max() <= 6


def test_frames_meet_the_port_contract(fake_picamera2: type[Picamera2]) -> None:
    cam = started(fake_picamera2)
    frames = [cam.read() for _ in range(3)]
    for i, frame in enumerate(frames):
        image = frame.image
        assert image.shape == (H * 3 // 2, W)
        assert image.dtype == np.uint8
        assert image.flags.writeable and image.flags.c_contiguous
        assert frame.index == i
    frames[0].image[:] = 0  # the watermark is burnt in place
    assert not np.array_equal(frames[1].image, frames[0].image)
    assert not np.array_equal(frames[1].image, frames[2].image)


def test_timestamps_follow_the_sensor_on_the_clocks_timeline(
    fake_picamera2: type[Picamera2],
) -> None:
    clock = SimClock()
    clock.advance(12.5)
    cam = started(fake_picamera2, clock)
    first = cam.read()
    assert first.captured == clock.monotonic()
    # However late each read runs, frames are one frame duration apart.
    captured = [first.captured]
    for late in (0.2, 0.0, 1.7):
        clock.advance(late)
        captured.append(cam.read().captured)
    steps = np.diff(captured)
    assert steps == pytest.approx([0.033_333] * 3, abs=1e-9)
    assert steps == pytest.approx([1 / FPS] * 3, abs=1e-6)


def test_timestamps_restart_from_the_clock_after_a_restart(
    fake_picamera2: type[Picamera2],
) -> None:
    clock = SimClock()
    cam = started(fake_picamera2, clock)
    cam.read()
    cam.stop()
    clock.advance(60)
    cam.start()
    frame = cam.read()
    assert frame.index == 0
    assert frame.captured == clock.monotonic()


def test_timestamps_fall_back_to_the_clock_without_a_sensor_timestamp(
    fake_picamera2: type[Picamera2],
) -> None:
    clock = SimClock()
    cam = started(fake_picamera2, clock)
    fake_picamera2.opened[-1].omit_sensor_timestamp = True
    for _ in range(3):
        clock.advance(0.05)
        assert cam.read().captured == clock.monotonic()


def test_fake_stamps_are_boot_relative_nanoseconds(fake_picamera2: type[Picamera2]) -> None:
    started(fake_picamera2)
    fake = fake_picamera2.opened[-1]
    request = fake.capture_request(wait=1.0)
    try:
        metadata = request.get_metadata()
    finally:
        request.release()
    assert metadata["SensorTimestamp"] == BOOT_NS
    assert metadata["FrameDuration"] == 33_333


def test_every_request_is_released(fake_picamera2: type[Picamera2]) -> None:
    cam = started(fake_picamera2)
    for _ in range(5):
        cam.read()
    fake = fake_picamera2.opened[-1]
    assert len(fake.requests) == 5
    assert all(r.released for r in fake.requests)
    assert fake.waits == [1.0] * 5  # never an unbounded wait


def test_request_is_released_when_make_array_fails(fake_picamera2: type[Picamera2]) -> None:
    cam = started(fake_picamera2)
    fake = fake_picamera2.opened[-1]
    fake.fail_make_array = RuntimeError("dma-buf mapping failed")
    with pytest.raises(CameraError, match="dma-buf mapping failed"):
        cam.read()
    assert fake.requests[-1].released
    fake.fail_make_array = None
    assert cam.read().index == 0  # the fake refuses a capture while a request is held


def test_fake_refuses_a_second_capture_while_a_request_is_held(
    fake_picamera2: type[Picamera2],
) -> None:
    started(fake_picamera2)
    fake = fake_picamera2.opened[-1]
    request = fake.capture_request(wait=1.0)
    with pytest.raises(RuntimeError, match="still held"):
        fake.capture_request(wait=1.0)
    request.release()
    with pytest.raises(RuntimeError, match="negative ref_count"):
        request.release()


def test_a_stall_becomes_a_camera_error_and_flushes_the_abandoned_job(
    fake_picamera2: type[Picamera2],
) -> None:
    cam = started(fake_picamera2)
    fake = fake_picamera2.opened[-1]
    fake.stall = True
    with pytest.raises(CameraError, match="no frame within 1 s"):
        cam.read()
    assert fake.flushes == 1
    fake.stall = False
    cam.read()


def test_missing_picamera2_is_a_clear_camera_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as if picamera2 were absent, even on a Pi.
    monkeypatch.setitem(sys.modules, "picamera2", None)
    cam = Picamera2Camera(W, H, FPS, SimClock())
    with pytest.raises(CameraError) as err:
        cam.start()
    assert str(err.value) == picamera.NOT_INSTALLED
    assert "apt install python3-picamera2" in str(err.value)


def test_missing_libcamera_bindings_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def import_module(name: str) -> None:
        raise ModuleNotFoundError("No module named 'libcamera'", name="libcamera")

    monkeypatch.setattr(picamera.importlib, "import_module", import_module)
    with pytest.raises(CameraError, match=r"cannot import 'libcamera'.*system-site-packages"):
        Picamera2Camera(W, H, FPS, SimClock()).start()


def test_picamera2_errors_are_wrapped_with_their_message(fake_picamera2: type[Picamera2]) -> None:
    with pytest.raises(CameraError, match="cannot open camera 5: IndexError: list index"):
        Picamera2Camera(W, H, FPS, SimClock(), camera_num=5).start()


def test_an_adjusted_size_is_refused_and_the_camera_released(
    fake_picamera2: type[Picamera2],
) -> None:
    fake_picamera2.adjust_main_size = (W + 8, H)
    with pytest.raises(CameraError, match=f"cannot deliver {W}x{H}"):
        started(fake_picamera2)
    fake = fake_picamera2.opened[-1]
    assert not fake.is_open and not fake.started


def test_stop_stops_and_closes_and_start_reopens(fake_picamera2: type[Picamera2]) -> None:
    cam = started(fake_picamera2)
    cam.read()
    cam.stop()
    first = fake_picamera2.opened[-1]
    assert first.stops == 1 and not first.is_open
    cam.stop()  # harmless twice
    with pytest.raises(CameraError, match="not started"):
        cam.read()
    cam.start()
    assert len(fake_picamera2.opened) == 2 and fake_picamera2.opened[-1].started


def test_start_twice_closes_the_first_camera(fake_picamera2: type[Picamera2]) -> None:
    cam = started(fake_picamera2)
    cam.start()
    first, second = fake_picamera2.opened
    assert not first.is_open and second.started


def test_odd_sizes_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="even"):
        Picamera2Camera(641, 480, FPS, SimClock())

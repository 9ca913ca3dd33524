"""The RTSP camera against a real RTSP server: GStreamer's, live H.264 on loopback.

The server (tests/fixtures/rtsp_server.py) runs under Debian's Python with PyGObject;
without the Debian packages the tests skip, or fail under CI=true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.camera import CameraError, VideoFrame
from device.clock import SystemClock
from device.rtsp import NewestFrame, RtspCamera, check_url, redact
from simulator.mosquitto import free_port
from tests.fixtures.real import TIMEOUT, RtspServer

SERVER = Path(__file__).parent / "fixtures" / "rtsp_server.py"


@pytest.fixture
def server() -> Iterator[RtspServer]:
    srv = RtspServer(free_port(), "/cam0:ball", "/cam1:smpte").start()
    yield srv
    srv.stop()


def _camera(url: str, width: int = 160, height: int = 120) -> RtspCamera:
    return RtspCamera(
        url, width, height, 15, SystemClock(), timeout=TIMEOUT, retry_initial=0.2, retry_max=0.5
    )


def _frames(cam: RtspCamera, n: int, within: float = 15.0) -> list[VideoFrame]:
    """The next ``n`` distinct frames, skipping the faults while the camera connects."""
    got: list[VideoFrame] = []
    deadline = time.monotonic() + within
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} frames in {within} s"
        try:
            frame = cam.read()
        except CameraError:
            time.sleep(0.05)
            continue
        if not got or frame.index > got[-1].index:
            got.append(frame)
    return got


def _fault(cam: RtspCamera, within: float) -> CameraError:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            cam.read()
        except CameraError as e:
            return e
    pytest.fail(f"no CameraError within {within} s")


@pytest.mark.slow
def test_frames_arrive_differ_and_are_scaled(server: RtspServer) -> None:
    cam = _camera(server.url("/cam0"))
    cam.start()
    try:
        frames = _frames(cam, 5)
    finally:
        cam.stop()
    for f in frames:
        assert f.image.shape == (180, 160) and f.image.dtype == np.uint8
        assert f.image.flags.writeable
    assert not np.array_equal(frames[0].image, frames[-1].image)  # the ball moves
    assert [f.captured for f in frames] == sorted(f.captured for f in frames)


@pytest.mark.slow
def test_server_gone_is_a_fault_within_the_timeout_and_back_is_frames(
    server: RtspServer,
) -> None:
    cam = _camera(server.url("/cam0"))
    cam.start()
    try:
        _frames(cam, 3)
        server.stop()
        stopped = time.monotonic()
        error = _fault(cam, TIMEOUT + 1.0)
        assert "127.0.0.1" in str(error) and "no frame for" in str(error)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))  # down for 3 s
        with pytest.raises(CameraError):
            cam.read()
        server.start()
        before = cam.connects
        frames = _frames(cam, 3, within=20.0)
        assert cam.connects > before
        assert frames[0].image.shape == (180, 160)
    finally:
        cam.stop()


@pytest.mark.slow
def test_two_cameras_read_two_paths_at_once(server: RtspServer) -> None:
    cams = [_camera(server.url("/cam0")), _camera(server.url("/cam1"), 320, 240)]
    for cam in cams:
        cam.start()
    try:
        deadline = time.monotonic() + 15
        per_cam: list[list[VideoFrame]] = [[], []]
        while min(len(f) for f in per_cam) < 4:
            assert time.monotonic() < deadline
            for cam, got in zip(cams, per_cam, strict=True):
                try:
                    got.append(cam.read())
                except CameraError:
                    time.sleep(0.02)
    finally:
        for cam in cams:
            cam.stop()
    assert per_cam[0][-1].image.shape == (180, 160)
    assert per_cam[1][-1].image.shape == (360, 320)
    # Two patterns: the bouncing ball is mostly black, the colour bars are not.
    assert per_cam[0][-1].image.mean() < per_cam[1][-1].image.mean()


@pytest.mark.slow
def test_a_path_the_server_lacks_is_a_fault_naming_it(server: RtspServer) -> None:
    cam = _camera(server.url("/nothing"))
    cam.start()
    try:
        error = _fault(cam, TIMEOUT + 3.0)
    finally:
        cam.stop()
    assert "/nothing" in str(error)


def test_nothing_listening_is_a_fault_not_a_hang() -> None:
    cam = _camera(f"rtsp://127.0.0.1:{free_port()}/cam0")
    cam.start()
    try:
        error = _fault(cam, TIMEOUT + 2.0)
    finally:
        cam.stop()
    assert "cannot open the stream" in str(error) or "no frame" in str(error)


@pytest.mark.parametrize(
    "url", ["http://camera/stream", "rtsp:///nohost", "10.0.0.7:554/s1", "rtsp://h:port/x"]
)
def test_a_malformed_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="RTSP URL") as info:
        _camera(url)
    assert url.split("//")[-1].split("/")[0] in str(info.value)


def test_messages_never_carry_the_password() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.7:554/s1") == "rtsp://admin@10.0.0.7:554/s1"
    assert redact("rtsp://10.0.0.7/s1") == "rtsp://10.0.0.7/s1"
    with pytest.raises(ValueError) as info:
        check_url("http://admin:s3cret@10.0.0.7/s1")
    assert "s3cret" not in str(info.value)


def test_read_before_start_is_a_camera_error() -> None:
    with pytest.raises(CameraError, match="not started"):
        _camera("rtsp://127.0.0.1:9/x").read()


def test_the_newest_frame_replaces_older_ones_and_waits_are_bounded() -> None:
    slot = NewestFrame()
    assert slot.wait_newer(-1, 0.0) is None
    image = np.zeros((2, 2, 3), np.uint8)
    for i in range(3):
        slot.put(VideoFrame(image, float(i), i))
    newest = slot.wait_newer(-1, 0.0)
    assert newest is not None and newest.index == 2
    again = slot.wait_newer(2, 0.0)  # nothing newer: the newest again
    assert again is newest

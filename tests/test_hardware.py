"""The hardware factory, and each simulated fault switch as the recorder's ports see it:
what a tester flips must look to the recorder like the same fault on a board."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.recording_settings import Recording
from common.room_settings import Room
from common.settings import DeviceConfig
from device.camera import CameraError
from device.clock import OffsetClock, SimClock
from device.hardware import BoardFactory, HardwareError, SimFactory, camera_tracks
from device.microphone import MicrophoneError
from simulator.device import SimDevice, shipped_route
from tests.fixtures.nmea import gga

SMALL = Recording(width=128, height=72, fps=10, audio_rate=8000, prebuffer_seconds=0)


def test_a_body_recorder_gets_one_camera_and_a_room_one_per_camera_track(tmp_path: Path) -> None:
    clock = SimClock()
    body = SimFactory(shipped_route()).build(DeviceConfig(recording=SMALL), tmp_path, clock)
    assert list(body.cameras) == ["main"]
    room = DeviceConfig(recording=SMALL, room=Room())
    hw = SimFactory(shipped_route()).build(room, tmp_path, clock)
    assert list(hw.cameras) == camera_tracks(room) == list(Room().cameras)
    assert len(hw.cameras) > 1
    a, b = (cam.read().image for cam in list(hw.cameras.values())[:2])
    assert (a != b).any(), "each camera has its own colours"
    frame = hw.cameras[camera_tracks(room)[0]].read()
    assert frame.image.shape == (72 * 3 // 2, 128) and frame.image.flags.writeable  # YUV 4:2:0
    assert hw.microphone.rate == 8000 and hw.microphone.read(80).shape == (80,)


def test_the_factory_follows_the_settings_route_and_its_own_options(tmp_path: Path) -> None:
    clock = SimClock()
    route = tmp_path / "here.nmea"
    route.write_text(gga("013000", lat="3000.0000") + "\n")
    config = DeviceConfig.model_validate(
        {"recording": SMALL.model_dump(), "gnss": {"route": route}}
    )
    hw = SimFactory(shipped_route(), battery_drain_per_hour=0, storage_capacity=None).build(
        config, tmp_path, clock
    )
    fix = hw.gnss.state().last_fix
    assert fix is not None and fix.lat == pytest.approx(30.0)
    clock.advance(3600)
    assert hw.battery.percent() == 100.0  # no drain asked for
    assert hw.storage.usage().total == shutil.disk_usage(tmp_path).total  # the real disk
    draining = SimFactory(shipped_route()).build(config, tmp_path, clock)
    clock.advance(3600)
    assert draining.battery.percent() == pytest.approx(92.0)
    assert draining.storage.usage().total == 64 * 1024**3


def _board(settings: dict[str, object]) -> DeviceConfig:
    return DeviceConfig.model_validate(settings)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        # this machine has no picamera2: the default body camera names what is missing
        ({}, "hardware.cameras.main: backend 'picamera': picamera2 is not installed"),
        (
            {
                "room": {},
                "hardware": {"cameras": {"subject": {"backend": "rtsp", "url": "rtsp://c/s"}}},
            },
            "hardware.cameras.room: no camera configured for the room's track 'room'",
        ),
        (
            {"hardware": {"cameras": {"side": {"backend": "rtsp", "url": "rtsp://c/s"}}}},
            "hardware.cameras.side: no such camera track (tracks: main)",
        ),
        (
            {"hardware": {"cameras": {"main": {"backend": "v4l2", "device": "/dev/video99"}}}},
            "hardware.cameras.main: ",
        ),
        (
            {"hardware": {"cameras": {"main": {"backend": "rtsp", "url": "http://x"}}}},
            "hardware.cameras.main: ",
        ),
    ],
)
def test_the_board_factory_names_the_setting_and_what_is_missing(
    tmp_path: Path, settings: dict[str, object], named: str
) -> None:
    config = _board(settings)
    with pytest.raises(HardwareError) as e:
        BoardFactory(config).build(config, tmp_path, OffsetClock())
    assert str(e.value).startswith(named), str(e.value)


def test_the_board_factory_checks_gnss_and_battery(tmp_path: Path) -> None:
    rtsp = {"cameras": {"main": {"backend": "rtsp", "url": "rtsp://127.0.0.1:1/x"}}}
    board = BoardFactory(DeviceConfig())
    assert board.pins is None  # gpiozero's default: the board's own pins
    no_battery_here = tmp_path / "no-power-supply"
    no_battery_here.mkdir()
    config = _board({"hardware": {**rtsp, "battery": {"root": str(no_battery_here)}}})
    with pytest.raises(HardwareError, match=r"^hardware\.battery: .*backend = \"none\""):
        board._battery(config)
    replay = _board({"gnss": {"backend": "replay"}})
    with pytest.raises(HardwareError, match="needs a route"):
        board._gnss(replay, OffsetClock())
    assert (
        board._gnss(_board({"gnss": {"backend": "none"}}), OffsetClock()).state().has_fix is False
    )


def test_settings_refuse_keys_their_backend_does_not_use() -> None:
    from pydantic import ValidationError

    for bad in (
        {"gnss": {"backend": "gpsd", "route": "r.nmea"}},
        {"gnss": {"backend": "serial"}},
        {"hardware": {"cameras": {"main": {"backend": "rtsp"}}}},
        {"hardware": {"cameras": {"main": {"backend": "picamera", "url": "rtsp://x/y"}}}},
        {
            "hardware": {
                "cameras": {
                    "main": {"backend": "rtsp", "url": "rtsp://x/y", "device": "/dev/video0"}
                }
            }
        },
        {"hardware": {"battery": {"backend": "none", "name": "BAT0"}}},
    ):
        with pytest.raises(ValidationError):
            DeviceConfig.model_validate(bad)


def test_simulated_hardware_refuses_a_real_receiver(tmp_path: Path) -> None:
    config = _board({"gnss": {"backend": "gpsd"}})
    with pytest.raises(HardwareError, match="simulated hardware simulates the receiver"):
        SimFactory(shipped_route()).build(config, tmp_path, SimClock())


def test_a_failed_camera_raises_as_a_broken_sensor_and_mends(tmp_path: Path) -> None:
    hw = SimFactory(shipped_route()).build(DeviceConfig(recording=SMALL), tmp_path, SimClock())
    cam = hw.cameras["main"]
    cam.read()
    cam.fail()
    assert cam.failed
    with pytest.raises(CameraError):
        cam.read()
    cam.fail(False)
    assert not cam.failed and cam.read().index == 1


def test_a_dead_microphone_raises_and_mends(tmp_path: Path) -> None:
    hw = SimFactory(shipped_route()).build(DeviceConfig(recording=SMALL), tmp_path, SimClock())
    mic = hw.microphone
    mic.fail()
    assert mic.failed
    with pytest.raises(MicrophoneError):
        mic.read(10)
    mic.fail(False)
    assert mic.read(10).shape == (10,)


def test_a_blinded_receiver_keeps_its_last_fix_ageing(tmp_path: Path) -> None:
    clock = SimClock()
    gnss = SimFactory(shipped_route()).build(DeviceConfig(), tmp_path, clock).gnss
    clock.advance(5)
    before = gnss.state()
    assert before.has_fix and before.last_fix is not None
    gnss.lose()
    clock.advance(5)
    blind = gnss.state()
    assert gnss.lost and not blind.has_fix
    assert blind.last_fix == before.last_fix  # no newer fix while blind
    assert (blind.age(clock.monotonic()) or 0) >= 5
    gnss.lose(False)
    assert gnss.state().has_fix and gnss.state().last_fix != before.last_fix


def test_a_receiver_sent_walking_reports_the_new_route(tmp_path: Path) -> None:
    clock = SimClock()
    gnss = SimFactory(shipped_route()).build(DeviceConfig(), tmp_path, clock).gnss
    route = tmp_path / "elsewhere.nmea"
    route.write_text(gga("013000", lat="3000.0000") + "\n")
    gnss.walk(route)
    fix = gnss.state().last_fix
    assert fix is not None and fix.lat == pytest.approx(30.0)


def test_a_filled_volume_shrinks_as_the_device_writes_and_comes_back(tmp_path: Path) -> None:
    hw = SimFactory(shipped_route(), storage_capacity=10_000_000).build(
        DeviceConfig(), tmp_path, SimClock()
    )
    card = hw.storage
    assert card.usage().free == 10_000_000 and not card.filled
    card.fill(1000)
    (tmp_path / "segment.mp4").write_bytes(b"x" * 400)
    assert card.filled and card.usage().free == 600
    (tmp_path / "more.mp4").write_bytes(b"x" * 1000)
    assert card.usage().free == 0 and card.usage().fraction_used == 1.0
    card.fill(None)
    assert card.usage().free == 10_000_000 - 1400
    with pytest.raises(ValueError, match="0 or more"):
        card.fill(-1)


def test_a_flat_battery_reads_flat_unless_plugged_in(tmp_path: Path) -> None:
    clock = SimClock()
    battery = SimFactory(shipped_route()).build(DeviceConfig(), tmp_path, clock).battery
    battery.set(percent=10, drain_per_hour=3600)
    clock.advance(5)
    assert battery.percent() == pytest.approx(5.0)
    battery.set(external=True)
    clock.advance(60)
    assert battery.external_power() and battery.percent() == pytest.approx(5.0)


def test_a_wall_clock_jump_moves_wall_time_only() -> None:
    clock = OffsetClock()
    mono, wall = clock.monotonic(), clock.wall()
    clock.jump_wall(3600)
    assert clock.wall() - wall == pytest.approx(3600, abs=1)
    assert clock.monotonic() - mono < 1


def test_the_recorder_sees_the_switches_as_faults(tmp_path: Path) -> None:
    """Flipped before a session and mended inside it: each fault is an interruption."""
    dev = SimDevice(tmp_path / "d", DeviceConfig(recording=SMALL))
    dev.start()
    try:
        dev.recorder.open_session()
        dev.run(0.5)
        dev.hardware.cameras["main"].fail()
        dev.hardware.microphone.fail()
        dev.run(0.5)
        assert sorted(dev.recorder.status()["interrupted"]) == ["camera", "microphone"]
        dev.camera.fail(False)
        dev.microphone.fail(False)
        dev.run(0.5)
        assert dev.recorder.status()["interrupted"] == []
    finally:
        dev.stop()


def test_simulated_hardware_says_it_does_not_use_the_hardware_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SimFactory(shipped_route()).build(DeviceConfig(), tmp_path, SimClock())
    assert "not used" not in caplog.text
    config = _board({"hardware": {"microphone": {"device": "hw:1,0"}}})
    SimFactory(shipped_route()).build(config, tmp_path, SimClock())
    assert "[hardware]" in caplog.text and "not used" in caplog.text

"""The H.264 encoder fits the board: hardware where the SoC has one, software elsewhere, and
a hardware encoder that does not open falls back, logged and sealed."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest

from agent.media import (
    HARDWARE_H264,
    SOFTWARE_H264,
    EncoderChoice,
    automatic_encoder,
    configured_encoder,
)
from common.archive.device_directory import DeviceDirectory, load_chain
from common.archive.verify import verify_archive
from common.recording_settings import Recording
from evidence.seal import Entry
from simulator.device import SimDevice
from tests.fixtures.config import small_config

PI4 = b"raspberrypi,4-model-b\0brcm,bcm2711\0"
ZERO2W = b"raspberrypi,model-zero-2-w\0brcm,bcm2837\0"
PI5 = b"raspberrypi,5-model-b\0brcm,bcm2712\0"


@pytest.mark.parametrize(
    ("compatible", "codec"),
    [(PI4, HARDWARE_H264), (ZERO2W, HARDWARE_H264), (PI5, SOFTWARE_H264), (b"", SOFTWARE_H264)],
)
def test_auto_takes_the_socs_hardware_encoder_where_there_is_one(
    compatible: bytes, codec: str
) -> None:
    assert automatic_encoder(compatible) == codec


def test_the_setting_is_read_from_the_device_tree_or_taken_as_named(tmp_path: Path) -> None:
    tree = tmp_path / "compatible"
    tree.write_bytes(PI4)
    assert configured_encoder("auto", tree) == HARDWARE_H264
    assert configured_encoder("auto", tmp_path / "none") == SOFTWARE_H264  # not a Pi
    assert configured_encoder("libx264", tree) == SOFTWARE_H264
    assert configured_encoder("h264_v4l2m2m", tmp_path / "none") == HARDWARE_H264


def test_a_hardware_encoder_that_does_not_open_falls_back_once() -> None:
    # This machine has no V4L2 encoder device: PyAV's h264_v4l2m2m fails to open for real.
    choice = EncoderChoice(HARDWARE_H264)
    rec = Recording(width=320, height=180, fps=15, prebuffer_seconds=0)
    first = choice.open(rec, 500_000)
    assert first.codec == SOFTWARE_H264 and choice.codec == SOFTWARE_H264
    fallback = choice.take_fallback()
    assert fallback is not None and fallback[0] == HARDWARE_H264 and fallback[1]
    assert choice.take_fallback() is None
    assert choice.open(rec, 500_000).codec == SOFTWARE_H264


def test_software_failing_to_open_is_not_hidden() -> None:
    choice = EncoderChoice(SOFTWARE_H264)
    with pytest.raises((av.FFmpegError, ValueError)):
        choice.open(Recording(width=320, height=180, fps=15, encoder_preset="nonsense"), 1)


def test_a_recording_on_a_missing_hardware_encoder_seals_the_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = small_config(prebuffer_seconds=0)
    rec = base.recording.model_copy(update={"encoder": HARDWARE_H264})
    dev = SimDevice(tmp_path / "dev", base.model_copy(update={"recording": rec}))
    with caplog.at_level(logging.WARNING, logger="agent.media"):
        dev.start()
        dev.recorder.open_session()
        dev.run(4)
        dev.recorder.close_session()
        dev.stop()
    entries = [e for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    events = [e for e in entries if e.kind == "event" and e.body["type"] == "encoder_fallback"]
    assert len(events) == 1, "one event, however many tracks and segments"
    assert events[0].body["wanted"] == HARDWARE_H264 and events[0].body["used"] == SOFTWARE_H264
    assert events[0].body["reason"]
    assert any("h264_v4l2m2m failed to open" in r.getMessage() for r in caplog.records)
    assert sum(e.kind == "segment" for e in entries) == 2
    assert verify_archive(DeviceDirectory(dev.recorder.root), None).ok

"""Bad input never costs a recorded byte: the recorder keeps recording."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.config import load_config
from agent.session import SessionError
from common.archive.device_directory import DeviceDirectory, read_public_key
from common.archive.media import probe_file
from common.archive.verify import verify_archive
from common.files import ConfigError
from evidence.layout import SPOOL
from simulator.device import SimDevice
from tests.fixtures.config import small_config


def test_malformed_requests_do_not_interrupt_recording(tmp_path: Path) -> None:
    dev = SimDevice(tmp_path / "dev", small_config(prebuffer_seconds=0))
    dev.start()
    rec = dev.recorder
    rec.open_session()
    dev.run(1)
    rec.post("self_destruct")  # garbage event from a control thread
    with pytest.raises(SessionError, match="unknown marker type"):
        rec.mark("tea_break")
    with pytest.raises(SessionError, match="already open"):
        rec.open_session()
    dev.run(1)
    assert "unknown control event" in (rec.last_error or "")
    rec.close_session()
    dev.stop()
    report = verify_archive(DeviceDirectory(rec.root), read_public_key(rec.root / "device.pub"))
    assert report.ok
    assert report.sessions[0].duration == pytest.approx(2.0)


def test_camera_fault_does_not_stop_the_loop(tmp_path: Path) -> None:
    dev = SimDevice(tmp_path / "dev", small_config(prebuffer_seconds=0))
    dev.start()
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()
    dev.run(0.5)
    assert "camera" in (dev.recorder.last_error or "")
    dev.camera.fail(False)
    dev.run(1)
    dev.recorder.close_session()
    dev.stop()
    assert verify_archive(DeviceDirectory(dev.recorder.root), None).ok


def test_a_segment_cut_by_power_loss_decodes_to_its_last_fragment(tmp_path: Path) -> None:
    dev = SimDevice(tmp_path / "dev", small_config(prebuffer_seconds=0))
    dev.start()
    dev.recorder.open_session()
    dev.run(2 + 1.6)  # one full segment, then 1.6 s into the next (24 frames)
    (open_segment,) = (dev.recorder.root / SPOOL).glob("*.mp4")
    snapshot = tmp_path / "cut.mp4"
    shutil.copyfile(open_segment, snapshot)  # what a power cut would leave on disk
    dev.recorder.close_session()
    dev.stop()
    facts = probe_file(snapshot)
    assert facts.video_frames >= 15, "the first 1 s fragment survives"


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "device.toml"
    bad.write_text("[recording]\nprebufer_seconds = 30\n")
    with pytest.raises(ConfigError, match=r"recording.prebufer_seconds: Extra inputs"):
        load_config(bad)
    bad.write_text("[recording]\nprebuffer_seconds = 500\n")
    with pytest.raises(ConfigError, match=r"recording.prebuffer_seconds"):
        load_config(bad)
    bad.write_text("[recording\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")
    bad.write_text(
        '[watermark.labels]\nbadge = "警号"\n[recording]\nsegment_seconds = 3\n'
        "keyframe_seconds = 2\n"
    )
    with pytest.raises(ConfigError, match="multiple of keyframe_seconds"):
        load_config(bad)

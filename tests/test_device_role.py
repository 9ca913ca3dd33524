"""A device's settings agree with the role it was enrolled in: a ``[room]`` section on a
device keygen'd as a body recorder is refused, naming the problem and the fix; a room
controller without one gets the default room; a device never enrolled (a test bench's
simulated room) takes the settings as they are."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import enrolment, provisioned
from agent.config import device_config
from common.files import ConfigError

ROOM = "[room]\ncameras = ['subject', 'room']\n"


def keygen(data: Path, role: str | None) -> None:
    enrolment.keygen(data, data.parent / "request.json", time.time(), serial="SN-1", role=role)


def test_a_room_section_on_a_body_recorder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    keygen(data, None)  # the default role: a body recorder
    (data / "device.toml").write_text(ROOM)
    with pytest.raises(ConfigError) as e:
        device_config(data)
    message = str(e.value)
    assert "device.toml: [room] is for a room controller" in message
    assert "body_recorder" in message and "--role room_controller" in message


def test_an_explicit_config_with_a_room_is_refused_on_a_body_recorder(tmp_path: Path) -> None:
    data, config = tmp_path / "dev", tmp_path / "room.toml"
    keygen(data, "body_recorder")
    config.write_text(ROOM)
    with pytest.raises(ConfigError, match=r"room\.toml: \[room\] is for a room controller"):
        device_config(data, config)
    assert device_config(data).room is None  # its own settings are still fine


def test_a_room_controller_takes_its_room_or_the_default_one(tmp_path: Path) -> None:
    data, config = tmp_path / "room", tmp_path / "room.toml"
    keygen(data, "room_controller")
    config.write_text(ROOM)
    assert device_config(data, config).tracks == ["subject", "room", "pip"]
    assert device_config(data).room is not None  # no [room]: the default room


def test_a_device_never_enrolled_takes_a_room_section(tmp_path: Path) -> None:
    data, config = tmp_path / "bench", tmp_path / "room.toml"
    data.mkdir()
    config.write_text(ROOM)
    assert device_config(data, config).room is not None


def test_agent_run_says_why_it_will_not_start(tmp_path: Path) -> None:
    """The command line's answer: exit 2 and the reason, no traceback, nothing recorded."""
    data = tmp_path / "dev"
    keygen(data, None)
    (data / "device.toml").write_text(ROOM)
    done = subprocess.run(
        [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data), "--sim"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "unbroken: error:" in done.stderr and "is for a room controller" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data / "chain").exists()


def test_the_agency_signs_no_room_settings_for_a_body_recorder(tmp_path: Path) -> None:
    from evidence.names import ProvisionError
    from simulator.site import LocalSite

    room = {"room": {"cameras": ["subject", "room"]}}
    with LocalSite(tmp_path / "site") as site:
        keygen(tmp_path / "dev", None)
        request = (tmp_path / "request.json").read_bytes()
        bundle = tmp_path / "bundle.json"
        with pytest.raises(ProvisionError, match=r"\[room\] section, but the device enrolled"):
            site.agency.enroll(request, bundle, time.time(), settings=room)
        assert not bundle.exists()
        site.agency.enroll(request, bundle, time.time())
        device = provisioned.read_identity(tmp_path / "dev").device_id
        with pytest.raises(ProvisionError, match="as a body_recorder: a room controller is"):
            site.agency.reissue(device, tmp_path / "again.json", time.time(), settings=room)
        assert not (tmp_path / "again.json").exists()

"""Shared fixtures: a small, fast recording configuration and a recorded session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.settings import DeviceConfig, Recording, Session
from simulator.session import record_session


def small_config(**recording: int) -> DeviceConfig:
    """640x360 at 15 fps: the real pipeline, quick enough to record many sessions."""
    rec = {"width": 640, "height": 360, "fps": 15, "prebuffer_seconds": 4, **recording}
    return DeviceConfig(recording=Recording(**rec), session=Session(badges=["012345"]))


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One session of 5 s after the press, with a full 4 s pre-event buffer. Read-only:
    tests that tamper work on a copy (see ``evidence``)."""
    root = tmp_path_factory.mktemp("recorded") / "dev"
    record_session(root, small_config(), 5, badges=["012345"])
    return root


@pytest.fixture
def evidence(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded evidence directory, free to tamper with."""
    dest = tmp_path / "evidence"
    shutil.copytree(recorded, dest)
    return dest

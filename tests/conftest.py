"""Shared fixtures: a recorded session, a provisioned fleet on a running broker, and
umqtt.simple for the room panel's firmware. The code behind them is in ``tests/fixtures``."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.mosquitto import Mosquitto
from simulator.session import record_session
from store.db import Database
from tests.fixtures.config import small_config
from tests.fixtures.fleet import Broker, Fleet, build_fleet
from tests.fixtures.panel import UMQTT_PACKAGE, UMQTT_VERSION, install_umqtt
from tests.fixtures.store import drop_created_schemas, postgres_url


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


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Mosquitto]]:
    """A fleet (see ``tests.fixtures.fleet``) and its broker running, one per test module."""
    fleet = build_fleet(tmp_path_factory.mktemp("fleet"))
    broker = Broker(fleet).start()
    yield fleet, broker
    broker.stop()


@pytest.fixture(scope="session")
def umqtt(request: pytest.FixtureRequest) -> Path:
    """A directory holding umqtt/simple.py, for MicroPython's path; kept in pytest's cache
    (without it, the venv). A failed fetch skips on a workstation and fails under CI=true."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    name = f"{UMQTT_PACKAGE}-{UMQTT_VERSION}"
    root = cache.mkdir(name) if cache else Path(sys.prefix) / "micropython-lib" / name
    try:
        install_umqtt(root)
    except (OSError, ValueError) as e:  # urllib errors; an index page that is not JSON
        message = f"could not fetch {UMQTT_PACKAGE} {UMQTT_VERSION}: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = str(tmp_path / "store.db") if request.param == "sqlite" else postgres_url()
    database = Database.connect(url)
    yield database
    database.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_created_schemas()

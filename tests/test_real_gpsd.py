"""The gpsd client (device/gpsd.py) against a real gpsd: ``gpsfake`` runs gpsd on a
pseudo-terminal and feeds it the shipped route, moved to Beijing so that every fix the
client reports must have come through gpsd from what the test fed.

Needs Debian's gpsd and gpsd-clients: missing, the test skips, or fails under CI=true.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pynmea2
import pytest

from device.clock import SystemClock
from device.gnss import Fix
from device.gpsd import GpsdClient
from simulator.mosquitto import free_port
from tests.fixtures.nmea import ROUTE, moved_route
from tests.fixtures.real import gpsfake

BEIJING = (39.9, 116.4)
# Seven epochs with a fix, then the receiver loses it (the route's underpass at 01:35:00).
FED = slice(586, 616)


def _expected(lines: list[str]) -> dict[float, tuple[float, float]]:
    """Fix time (UTC epoch) -> position, for every RMC with a fix among ``lines``."""
    fixes = {}
    for line in lines:
        msg = pynmea2.parse(line, check=True)
        if isinstance(msg, pynmea2.RMC) and msg.status == "A":
            when = dt.datetime.combine(msg.datestamp, msg.timestamp).replace(tzinfo=dt.UTC)
            fixes[when.timestamp()] = (msg.latitude, msg.longitude)
    return fixes


@pytest.fixture
def fed_gpsd(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], list[str]]]:
    """gpsd on a free port, fed the moved route once, a sentence every 0.2 s."""
    lines = moved_route(ROUTE, to=BEIJING)[FED]
    route = tmp_path / "beijing.nmea"
    route.write_text("\n".join(lines) + "\n", encoding="ascii")
    port = free_port()
    with gpsfake(route, port) as process:
        yield port, process, lines


@pytest.mark.slow
def test_the_clients_fixes_are_the_ones_gpsd_was_fed(
    fed_gpsd: tuple[int, subprocess.Popen[bytes], list[str]],
) -> None:
    port, process, lines = fed_gpsd
    expected = _expected(lines)
    client = GpsdClient(SystemClock(), port=port, retry_initial=0.1, retry_max=0.2)
    seen: dict[float, Fix] = {}
    lost_after_fix = False
    try:
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            state = client.state()
            if state.has_fix and state.last_fix is not None:
                seen[state.last_fix.fix_time] = state.last_fix
            elif seen:
                lost_after_fix = True  # the underpass, while gpsd still runs
                break
            time.sleep(0.05)
        final = client.state()
    finally:
        client.close()
    assert len(seen) >= 3, f"only {len(seen)} fixes from gpsd"
    for when, fix in seen.items():
        assert when in expected, f"a fix at {when} that was never fed"
        lat, lon = expected[when]
        assert fix.lat == pytest.approx(lat, abs=1e-6)
        assert fix.lon == pytest.approx(lon, abs=1e-6)
        assert abs(fix.lat - BEIJING[0]) < 0.05 and abs(fix.lon - BEIJING[1]) < 0.05
    assert any(f.alt == pytest.approx(29.5) for f in seen.values())  # from the GGA
    assert client.bad_reports == 0
    assert lost_after_fix, "the fed fix loss never showed"
    assert final.last_fix is not None and final.last_fix.fix_time in expected
    assert final.last_fix.fix_time >= max(seen)  # kept across the loss

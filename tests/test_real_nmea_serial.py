"""The serial NMEA receiver on a real tty: a pseudo-terminal the test writes the shipped
route into (moved to Beijing, so every fix must have come down the line)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pynmea2
import pytest

from device.clock import SimClock, SystemClock
from device.gnss import GnssState
from device.nmea_serial import NmeaFixes, SerialNmeaReceiver
from tests.fixtures.nmea import ROUTE, moved_route

BEIJING = (39.9, 116.4)
LINES = moved_route(ROUTE, to=BEIJING)


class Line:
    """A pseudo-terminal: the receiver reads ``path``; the test writes into ``send``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        tty.setraw(self.slave)  # a serial line: no echo back to the receiver

    def send(self, *lines: str) -> None:
        os.write(self.master, "".join(f"{line}\r\n" for line in lines).encode("ascii"))

    def hang_up(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


@pytest.fixture
def line() -> Iterator[Line]:
    pty = Line()
    yield pty
    for fd in (pty.master, pty.slave):
        with contextlib.suppress(OSError):  # hung up by the test
            os.close(fd)


def _until(gnss: SerialNmeaReceiver, ok: Callable[[GnssState], bool]) -> GnssState:
    deadline = time.monotonic() + 10
    while not ok(state := gnss.state()):
        assert time.monotonic() < deadline, f"state stayed {state}"
        time.sleep(0.02)
    return state


def _epoch(rmc: str) -> float:
    msg = pynmea2.parse(rmc)
    return dt.datetime.combine(msg.datestamp, msg.timestamp).replace(tzinfo=dt.UTC).timestamp()


def test_fixes_are_the_sentences_sent_down_the_line(line: Line) -> None:
    gnss = SerialNmeaReceiver(line.path, SystemClock(), baud=9600)
    try:
        line.send(*LINES[:6])  # three epochs, GGA then RMC
        last_rmc = LINES[5]
        state = _until(
            gnss, lambda s: s.last_fix is not None and s.last_fix.fix_time == _epoch(last_rmc)
        )
        fed = pynmea2.parse(LINES[4])  # that epoch's GGA
        assert state.has_fix and state.last_fix is not None
        assert state.last_fix.lat == pytest.approx(fed.latitude, abs=1e-9)
        assert state.last_fix.lon == pytest.approx(fed.longitude, abs=1e-9)
        assert state.last_fix.alt == pytest.approx(29.5)
        assert state.last_fix.satellites == int(fed.num_sats)  # the GGA's, kept by the RMC
        assert state.last_fix.hdop == pytest.approx(float(fed.horizontal_dil))
        line.send("$GPGGA,garbage*00", *LINES[600:602])  # into the underpass: no fix
        state = _until(gnss, lambda s: not s.has_fix)
        assert state.last_fix is not None and state.last_fix.fix_time == _epoch(last_rmc)
        _until(gnss, lambda s: gnss.bad_sentences == 1)
    finally:
        gnss.close()


def test_a_receiver_that_goes_away_has_no_fix_and_says_why(line: Line) -> None:
    gnss = SerialNmeaReceiver(line.path, SystemClock(), retry_initial=0.1, retry_max=0.2)
    try:
        line.send(*LINES[:2])
        _until(gnss, lambda s: s.has_fix)
        line.hang_up()
        state = _until(gnss, lambda s: not s.has_fix)
        assert state.last_fix is not None  # kept, and ageing
        deadline = time.monotonic() + 10
        while gnss.problem is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert line.path in gnss.problem
    finally:
        gnss.close()


def test_a_missing_or_wrong_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="/dev/ttyNOPE0"):
        SerialNmeaReceiver("/dev/ttyNOPE0", SystemClock())
    regular = tmp_path / "route.nmea"
    regular.write_text(LINES[0])
    with pytest.raises(ValueError, match="not a serial device"):
        SerialNmeaReceiver(str(regular), SystemClock())
    with pytest.raises(ValueError, match="baud rate 1234"):
        SerialNmeaReceiver("/dev/null", SystemClock(), baud=1234)


def test_a_gga_before_any_rmc_is_dated_by_the_clock() -> None:
    clock = SimClock(wall_start=dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC).timestamp())
    fixes = NmeaFixes(clock)
    fixes.feed(LINES[0], received=1.0)  # GGA, 01:30:00
    assert fixes.last_fix is not None
    assert fixes.last_fix.fix_time == dt.datetime(2026, 5, 1, 1, 30, tzinfo=dt.UTC).timestamp()
    fixes.feed(LINES[1], received=1.0)  # the RMC dates it 2026-03-14
    assert fixes.last_fix.fix_time == _epoch(LINES[1])
    fixes.feed(LINES[2], received=2.0)  # the next GGA takes the RMC's date
    assert fixes.last_fix.fix_time == _epoch(LINES[1]) + 1

"""GNSS port: NMEA replay of the shipped route, and the gpsd client against a fake gpsd."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device.backoff import Backoff
from device.clock import SimClock
from device.gnss import Fix, GnssState, format_position
from device.gpsd import GpsdClient
from device.nmea_replay import NmeaReplay
from tests.fixtures.nmea import gga, nmea, rmc

ROUTE = Path(__file__).resolve().parents[1] / "simulator" / "routes" / "hefei-foot-patrol.nmea"
T0 = datetime(2026, 3, 14, 1, 30, tzinfo=UTC).timestamp()  # the route's first timestamp


def dm(value: str) -> float:
    """'3149.2362' -> 31 + 49.2362 / 60, written independently of the module under test."""
    whole = value.split(".")[0]
    return int(whole[:-2]) + float(value[len(whole) - 2 :]) / 60


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Until a thread has done something (a bound on waiting, never a measure of speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# --- NmeaReplay on the shipped route -------------------------------------------------------


def test_start_position_is_the_first_sentence() -> None:
    first = ROUTE.read_text().splitlines()[0].split(",")
    assert first[0] == "$GPGGA"
    clock = SimClock()
    replay = NmeaReplay(ROUTE, clock)

    state = replay.state()
    fix = state.last_fix
    assert state.has_fix and fix is not None
    assert fix.lat == pytest.approx(dm(first[2]), abs=1e-9)
    assert fix.lon == pytest.approx(dm(first[4]), abs=1e-9)
    assert (fix.alt, fix.satellites, fix.hdop) == (29.5, 7, 1.6)
    assert fix.fix_time == T0
    assert fix.received == clock.monotonic()
    assert format_position(state, clock.monotonic()) == "31.820603N 117.227213E"

    clock.advance(5)
    fix = replay.state().last_fix
    assert fix is not None and fix.fix_time == T0 + 5
    assert fix.lat == pytest.approx(dm("3149.2371"), abs=1e-9)


def test_fix_loss_keeps_last_fix_and_age_grows_then_fix_returns() -> None:
    clock = SimClock()
    replay = NmeaReplay(ROUTE, clock)
    clock.advance(299)  # 01:34:59, the last second with a fix before the underpass
    state = replay.state()
    last = state.last_fix
    assert state.has_fix and last is not None and last.fix_time == T0 + 299

    for seconds_lost in range(1, 26):  # 01:35:00 .. 01:35:24
        clock.advance(1)
        state = replay.state()
        assert not state.has_fix
        assert state.last_fix is last
        assert state.age(clock.monotonic()) == seconds_lost
        assert format_position(state, clock.monotonic()) == f"NO FIX {seconds_lost}s"

    clock.advance(1)  # 01:35:25
    state = replay.state()
    fix = state.last_fix
    assert state.has_fix and fix is not None
    assert fix.fix_time == T0 + 325
    assert fix.lat == pytest.approx(dm("3149.3001"), abs=1e-9)
    assert fix.lon == pytest.approx(dm("11713.8386"), abs=1e-9)
    assert (fix.satellites, fix.hdop) == (9, 1.2)  # GGA data survives the RMC of the same second
    assert state.age(clock.monotonic()) == 0


def test_age_does_not_depend_on_how_often_state_is_polled() -> None:
    clock = SimClock()
    replay = NmeaReplay(ROUTE, clock)
    clock.advance(310)  # straight into the underpass, no polls on the way
    state = replay.state()
    assert not state.has_fix
    assert state.last_fix is not None and state.last_fix.fix_time == T0 + 299
    assert format_position(state, clock.monotonic()) == "NO FIX 11s"

    offset = NmeaReplay(ROUTE, SimClock(), start_offset=310).state()
    assert not offset.has_fix
    assert offset.last_fix is not None and offset.last_fix.fix_time == T0 + 299


def test_full_replay_skips_the_bad_checksum_and_never_raises() -> None:
    clock = SimClock()
    replay = NmeaReplay(ROUTE, clock)
    without_fix: set[int] = set()
    for second in range(0, 731):
        state = replay.state()
        if not state.has_fix:
            without_fix.add(second)
        assert replay.bad_sentences == (1 if second >= 450 else 0)  # 01:37:30 RMC
        clock.advance(1)
    assert without_fix == set(range(300, 325))
    assert replay.bad_sentences == 1
    final = replay.state()
    assert final.has_fix and final.last_fix is not None
    assert final.last_fix.fix_time == T0 + 719  # no loop: stays on the last fix

    # The count comes from that one sentence: with its checksum repaired, nothing is bad.
    lines = ROUTE.read_text().splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.startswith("$GPRMC,013730.00")]
    lines[i] = nmea(lines[i][1:].split("*")[0])
    repaired = NmeaReplay(lines, clock)
    clock.advance(720)
    repaired.state()
    assert repaired.bad_sentences == 0


def test_garbage_lines_are_skipped_and_counted() -> None:
    lines = [
        gga("120000"),
        rmc("120000"),
        "garbage",
        "",
        "   ",
        "\x00\xff\x7f",
        gga("120001")[:-2] + "00",  # wrong checksum
        gga("120001").split("*")[0],  # no checksum at all
        nmea("GPXYZ,1,2,3"),  # unknown sentence type
        nmea("GPGGA,120001.00,31x9.2362,N,11713.6328,E,1,08,1.0,30.0,M,-3.2,M,,"),  # latitude
        nmea("GPGGA,120001.00,3149.2362,Q,11713.6328,E,1,08,1.0,30.0,M,-3.2,M,,"),  # hemisphere
        nmea("GPRMC,99xx99,A,3149.2362,N,11713.6328,E,1.0,90.0,140326,,,A"),  # time
        nmea("GPGSV,1,1,01,05,40,083,46"),  # valid but not a position: ignored, not bad
        gga("120002", lat="3150.0000"),
        rmc("120002", lat="3150.0000"),
    ]
    clock = SimClock()
    replay = NmeaReplay(lines, clock)
    state = replay.state()
    assert replay.bad_sentences == 8
    assert state.has_fix and state.last_fix is not None
    assert state.last_fix.lat == pytest.approx(dm("3149.2362"))

    clock.advance(2)
    state = replay.state()
    assert replay.bad_sentences == 8
    assert state.has_fix and state.last_fix is not None
    assert state.last_fix.lat == pytest.approx(31 + 50 / 60)
    assert state.last_fix.fix_time == datetime(2026, 3, 14, 12, 0, 2, tzinfo=UTC).timestamp()


def test_fix_loss_is_recognised_even_with_a_position() -> None:
    # Some receivers keep printing the last position while reporting no fix.
    lines = [
        gga("120000"),
        rmc("120000"),
        gga("120001", lat="3150.0000", quality=0),
        gga("120002"),
        rmc("120002"),
        nmea("GPRMC,120003.00,V,3150.0000,N,11713.6328,E,1.0,90.0,140326,,,N"),
    ]
    noon = datetime(2026, 3, 14, 12, tzinfo=UTC).timestamp()
    clock = SimClock()
    replay = NmeaReplay(lines, clock)
    seen = []
    for _ in range(4):
        state = replay.state()
        fix = state.last_fix
        assert fix is not None and fix.lat == pytest.approx(dm("3149.2362"))
        seen.append((state.has_fix, fix.fix_time - noon))
        clock.advance(1)
    assert seen == [(True, 0), (False, 0), (True, 2), (False, 2)]


def test_loop_restarts_and_time_keeps_increasing() -> None:
    lines = [
        s
        for t, lat in [("120000", "3100"), ("120001", "3101"), ("120002", "3102")]
        for s in (gga(t, lat + ".0000"), rmc(t, lat + ".0000"))
    ]
    start = datetime(2026, 3, 14, 12, tzinfo=UTC).timestamp()
    clock = SimClock()
    looped = NmeaReplay(lines, clock, loop=True)
    once = NmeaReplay(lines, clock)
    assert looped.duration == 3.0
    seen = []
    for second in range(8):
        fix = looped.state().last_fix
        assert fix is not None and fix.fix_time == start + second
        assert fix.received == 1000.0 + second
        seen.append(round((fix.lat - 31) * 60))
        clock.advance(1)
    assert seen == [0, 1, 2, 0, 1, 2, 0, 1]
    stuck = once.state()
    assert stuck.last_fix is not None and stuck.last_fix.fix_time == start + 2

    clock = SimClock()
    route = NmeaReplay(ROUTE, clock, start_offset=715, loop=True)
    clock.advance(10)  # route second 725 is second 5 of the second lap
    fix = route.state().last_fix
    assert fix is not None and fix.fix_time == T0 + 725
    assert fix.lat == pytest.approx(dm("3149.2371"), abs=1e-9)


def test_midnight_rollover_and_missing_date() -> None:
    clock = SimClock()
    replay = NmeaReplay([gga("235959"), rmc("235959", date="311225"), gga("000000")], clock)
    fix = replay.state().last_fix
    assert fix is not None
    assert fix.fix_time == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert fix.satellites == 8  # the RMC kept the GGA's satellites for the same epoch
    clock.advance(1)
    fix = replay.state().last_fix
    assert fix is not None and fix.fix_time == datetime(2026, 1, 1, tzinfo=UTC).timestamp()

    # Without any RMC date the clock's UTC day is assumed (SimClock starts 2026-03-14).
    only_gga = NmeaReplay([gga("120000")], SimClock()).state().last_fix
    assert only_gga is not None
    assert only_gga.fix_time == datetime(2026, 3, 14, 12, tzinfo=UTC).timestamp()


# --- format_position -------------------------------------------------------------------


def _fix(lat: float, lon: float, received: float = 100.0) -> Fix:
    return Fix(lat, lon, None, T0, received, None, None)


def test_format_position() -> None:
    here = _fix(31.8206033, 117.2272133)
    assert format_position(GnssState(here, True), 100.0) == "31.820603N 117.227213E"
    assert format_position(GnssState(_fix(-33.86882, -70.5), True), 100.0) == (
        "33.868820S 70.500000W"
    )
    assert format_position(GnssState(None, False), 100.0) == "NO FIX"
    assert format_position(GnssState(None, False), 100.0, "无定位") == "无定位"
    assert format_position(GnssState(here, False), 111.6) == "NO FIX 12s"
    assert format_position(GnssState(here, False), 112.4) == "NO FIX 12s"
    assert format_position(GnssState(here, False), 112.5, "无定位") == "无定位 13s"
    assert format_position(GnssState(here, False), 100.2) == "NO FIX 0s"
    assert GnssState(None, False).age(5.0) is None
    assert GnssState(here, True).age(103.5) == 3.5


# --- GpsdClient against a fake gpsd --------------------------------------------------------


def line(report: object) -> bytes:
    return json.dumps(report).encode() + b"\n"


class FakeGpsd:
    """A gpsd on an ephemeral port; connection n runs scripts[n] after checking ?WATCH."""

    def __init__(self, scripts: list[Callable[[socket.socket], None]]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(5.0)
        self.port: int = self.server.getsockname()[1]
        self.commands: list[bytes] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, args=(scripts,), daemon=True)
        self.thread.start()

    def _serve(self, scripts: list[Callable[[socket.socket], None]]) -> None:
        try:
            for script in scripts:
                conn, _ = self.server.accept()
                with conn:
                    conn.settimeout(5.0)
                    command = b""
                    while b";" not in command:
                        chunk = conn.recv(1024)
                        if not chunk:
                            raise AssertionError(f"client hung up before ?WATCH: {command!r}")
                        command += chunk
                    if not command.startswith(b"?WATCH="):
                        raise AssertionError(f"expected ?WATCH, got {command!r}")
                    self.commands.append(command)
                    script(conn)
        except BaseException as e:  # reported by the test, not lost in this thread
            self.errors.append(e)
        finally:
            self.server.close()


def test_gpsd_client_follows_tpv_and_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the shutdown in close(), the reader would sit in recv() past close()'s join.
    monkeypatch.setattr("device.gpsd._RECV_BACKSTOP", 60.0)
    drop, release, client_gone = threading.Event(), threading.Event(), threading.Event()
    good = {
        "class": "TPV",
        "mode": 3,
        "lat": 31.820603,
        "lon": 117.227213,
        "altMSL": 29.5,
        "time": "2026-03-14T01:30:00.000Z",
    }

    def first(conn: socket.socket) -> None:
        conn.sendall(line({"class": "VERSION", "release": "3.25", "proto_major": 3}))
        conn.sendall(line({"class": "SKY", "uSat": 9, "hdop": 0.9}))
        conn.sendall(line({"class": "TPV", "mode": 1}))
        conn.sendall(b'{"class":"TPV","mode":3,"lat":31.8\n')  # malformed JSON
        conn.sendall(line({"class": "TPV", "mode": 3, "lat": 31.8}))  # a fix without lon/time
        payload = line(good)
        conn.sendall(payload[:20])  # a report split across reads
        time.sleep(0.05)
        conn.sendall(payload[20:])
        drop.wait(5.0)

    def second(conn: socket.socket) -> None:
        release.wait(5.0)
        conn.sendall(
            line(
                {
                    "class": "TPV",
                    "mode": 2,
                    "lat": 31.83,
                    "lon": 117.23,
                    "time": "2026-03-14T01:30:10Z",
                }
            )
        )
        if conn.recv(1024) == b"":
            client_gone.set()

    gpsd = FakeGpsd([first, second])
    clock = SimClock()
    client = GpsdClient(clock, port=gpsd.port, retry_initial=1.0, connect_timeout=0.5)
    try:
        assert wait_for(lambda: client.state().has_fix), gpsd.errors
        fix = client.state().last_fix
        assert fix == Fix(31.820603, 117.227213, 29.5, T0, clock.monotonic(), 9, 0.9)
        assert client.bad_reports == 2
        watch = gpsd.commands[0]
        assert json.loads(watch[len(b"?WATCH=") : watch.index(b";")]) == {
            "enable": True,
            "json": True,
        }

        drop.set()  # gpsd goes away: no fix, last fix kept, and the client comes back
        assert wait_for(lambda: client.next_attempt is not None)
        assert client.next_attempt == clock.monotonic() + 1.0
        assert not client.state().has_fix and client.state().last_fix == fix
        assert format_position(client.state(), clock.monotonic()) == "NO FIX 0s"
        assert client.attempts == 1  # not before the clock says so
        clock.advance(1.0)
        assert wait_for(lambda: len(gpsd.commands) == 2)

        release.set()
        assert wait_for(lambda: client.state().has_fix), gpsd.errors
        again = client.state().last_fix
        assert again is not None and (again.lat, again.lon) == (31.83, 117.23)
        assert again.fix_time == T0 + 10 and again.alt is None
        assert (client.attempts, client.connects) == (2, 2)

        clock.advance(6)  # no report for longer than stale_after: not a fix any more
        stale = client.state()
        assert not stale.has_fix and stale.last_fix == again
    finally:
        client.close()
    assert not client._thread.is_alive()  # close() woke the reader out of recv()
    assert client_gone.wait(3.0)
    gpsd.thread.join(3.0)
    assert not gpsd.errors


def test_backoff_doubles_up_to_its_maximum_and_starts_again_after_a_session() -> None:
    backoff = Backoff(0.5, 2.0)
    assert [backoff.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.5


def _waiting(client: GpsdClient, attempts: int) -> bool:
    return client.next_attempt is not None and client.attempts == attempts


def test_gpsd_client_without_gpsd_retries_on_the_clock_and_does_not_raise() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again before the client tries it
    clock = SimClock()
    client = GpsdClient(clock, port=port, retry_initial=1.0, retry_max=2.0)
    try:
        for attempt, delay in ((1, 1.0), (2, 2.0), (3, 2.0)):
            assert wait_for(lambda: _waiting(client, attempt)), client.attempts  # noqa: B023
            assert client.next_attempt == clock.monotonic() + delay
            assert client.state() == GnssState(None, False)
            assert client.connects == 0
            clock.advance(delay)
    finally:
        client.close()  # while it waits for the clock: the wait ends at once
    assert not client._thread.is_alive()


def test_an_undated_first_fix_is_awaited_not_counted_bad() -> None:
    """gpsd reports a position before its receiver gave it the date (no ``time``): that is
    not a usable fix yet, nor a malformed report; a fix with a time that does not parse is."""
    client = GpsdClient(SimClock(), port=1, connect_timeout=0.01)
    try:
        client._handle(json.dumps({"class": "TPV", "mode": 3, "lat": 39.9, "lon": 116.4}).encode())
        assert not client.state().has_fix and client.bad_reports == 0
        bad = {"class": "TPV", "mode": 3, "lat": 39.9, "lon": 116.4, "time": "yesterday"}
        client._handle(json.dumps(bad).encode())
        assert client.bad_reports == 1
        good = {**bad, "time": "2026-03-14T01:30:10Z"}
        client._handle(json.dumps(good).encode())
        assert client.state().has_fix and client.state().last_fix.lat == 39.9
    finally:
        client.close()

"""The GNSS port, a replay backend for simulation and a gpsd backend for real receivers.

A receiver is polled: ``state()`` never blocks and returns the most recent valid fix together
with whether the receiver has a fix *now*. A fix loss keeps the last fix, so the watermark can
say how old the last known position is instead of showing nothing.

Example::

    clock = SimClock()
    gnss = NmeaReplay("simulator/routes/hefei-foot-patrol.nmea", clock)
    clock.advance(310)                      # into the underpass
    state = gnss.state()                    # has_fix False, last_fix from 01:34:59 UTC
    format_position(state, clock.monotonic())   # "NO FIX 11s"
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pynmea2

from device.clock import Clock

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fix:
    lat: float  # decimal degrees, north positive
    lon: float  # decimal degrees, east positive
    alt: float | None  # metres above mean sea level
    fix_time: float  # UTC epoch seconds of the fix as the receiver reported it
    received: float  # clock.monotonic() when we got it
    satellites: int | None
    hdop: float | None


@dataclass(frozen=True)
class GnssState:
    last_fix: Fix | None  # the most recent valid fix, kept across a fix loss
    has_fix: bool  # whether the receiver currently has a fix

    def age(self, now_monotonic: float) -> float | None:
        """Seconds since the last fix was received, ``None`` if there never was one."""
        if self.last_fix is None:
            return None
        return now_monotonic - self.last_fix.received


class Gnss(Protocol):
    def state(self) -> GnssState:
        """The current state; non-blocking, consumes whatever data is due or available."""

    def close(self) -> None: ...


def format_position(state: GnssState, now_monotonic: float, no_fix_label: str = "NO FIX") -> str:
    """The watermark's position text: ``31.820603N 117.227213E``, or ``NO FIX 12s``."""
    fix = state.last_fix
    if state.has_fix and fix is not None:
        ns = "N" if fix.lat >= 0 else "S"
        ew = "E" if fix.lon >= 0 else "W"
        return f"{abs(fix.lat):.6f}{ns} {abs(fix.lon):.6f}{ew}"
    age = state.age(now_monotonic)
    if age is None:
        return no_fix_label
    # Half-up rather than round()'s half-even, so the shown age never steps backwards.
    return f"{no_fix_label} {math.floor(max(0.0, age) + 0.5)}s"


# --- NMEA replay -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sentence:
    """One NMEA line, decoded once at load time so that replay is cheap."""

    kind: Literal["fix", "lost", "bad", "other"]
    tod: float | None = None  # seconds since UTC midnight, if the sentence carries a time
    date: dt.date | None = None  # RMC only
    lat: float = 0.0
    lon: float = 0.0
    alt: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    merge: bool = False  # RMC: keep altitude/satellites/HDOP of the GGA for the same epoch


@dataclass(frozen=True)
class _Timed:
    due: float  # route seconds after the first timestamp; never decreases along the file
    fix_time: float | None  # UTC epoch of the sentence's own timestamp
    sentence: _Sentence


_BAD = _Sentence("bad")
_OTHER = _Sentence("other")
_DM = re.compile(r"^(\d{1,3})(\d\d(?:\.\d+)?)$")  # [d]ddmm[.mmmm]


class NoGnss:
    """No receiver (an interview room): never a fix, so positions read 'no fix'."""

    def state(self) -> GnssState:
        return GnssState(last_fix=None, has_fix=False)

    def close(self) -> None:
        pass


class SimGnss:
    """A simulated receiver walking a route (:class:`NmeaReplay`), with a tester's switches:
    ``lose()`` blinds it (no fix, the last one kept and ageing, as in an underpass) until
    ``lose(False)``; ``walk(route)`` sends it along another route from now on."""

    def __init__(self, route: str | Path, clock: Clock, loop: bool = True) -> None:
        self._clock = clock
        self._replay = NmeaReplay(route, clock, loop=loop)
        self._lost = False
        self._kept: Fix | None = None  # the last fix before the receiver was blinded

    @property
    def lost(self) -> bool:
        return self._lost

    def lose(self, lost: bool = True) -> None:
        if lost and not self._lost:
            self._kept = self._replay.state().last_fix
        self._lost = lost

    def walk(self, route: str | Path, loop: bool = False) -> None:
        self._replay = NmeaReplay(route, self._clock, loop=loop)

    def state(self) -> GnssState:
        st = self._replay.state()  # the route goes on while the receiver is blind
        return GnssState(self._kept, False) if self._lost else st

    def close(self) -> None:
        self._replay.close()


class NmeaReplay:
    """Replays an NMEA 0183 file (GGA and RMC) against a :class:`Clock`.

    The route's first timestamp maps to ``clock.monotonic()`` at construction, minus
    ``start_offset`` seconds into the route; ``state()`` consumes every sentence whose route
    time has come. ``Fix.received`` is the monotonic time a real receiver would have delivered
    the sentence, not the time ``state()`` happened to be called, so ages do not depend on how
    often the caller polls.

    Sentences with a bad or missing checksum, that fail to parse, or that claim a fix without
    a usable time or position are skipped and counted in ``bad_sentences`` when their turn
    comes. Blank lines are ignored. With ``loop=True`` the route restarts after its end, and
    fix times keep increasing by one route length per lap.
    """

    def __init__(
        self,
        route: str | Path | Sequence[str],
        clock: Clock,
        start_offset: float = 0.0,
        loop: bool = False,
    ) -> None:
        if isinstance(route, str | Path):
            lines = Path(route).read_text(encoding="ascii", errors="replace").splitlines()
        else:
            lines = list(route)
        decoded = [s for s in (_decode(line) for line in lines) if s is not None]
        # Without any RMC date, assume the route was recorded on the clock's current UTC day.
        today = dt.datetime.fromtimestamp(clock.wall(), dt.UTC).date()
        self._timeline, self._period = _timeline(decoded, today)
        self._clock = clock
        self._origin = clock.monotonic() - start_offset  # monotonic time of route second 0
        self._loop = loop
        self._next = 0
        self._lap = 0
        self._last_fix: Fix | None = None
        self._has_fix = False
        self.bad_sentences = 0

    @property
    def duration(self) -> float:
        """Seconds of one pass through the route (a loop lap)."""
        return self._period

    def state(self) -> GnssState:
        elapsed = self._clock.monotonic() - self._origin
        while self._next < len(self._timeline):
            item = self._timeline[self._next]
            due = item.due + self._lap * self._period
            if due > elapsed:
                break
            self._apply(item, self._origin + due)
            self._next += 1
            if self._next == len(self._timeline) and self._loop:
                self._next = 0
                self._lap += 1
        return GnssState(last_fix=self._last_fix, has_fix=self._has_fix)

    def close(self) -> None:
        pass  # the route was read whole at construction

    def _apply(self, item: _Timed, received: float) -> None:
        s = item.sentence
        if s.kind == "bad":
            self.bad_sentences += 1
        elif s.kind == "lost":
            self._has_fix = False
        elif s.kind == "fix" and item.fix_time is not None:
            fix_time = item.fix_time + self._lap * self._period
            alt, satellites, hdop = s.alt, s.satellites, s.hdop
            prev = self._last_fix
            if s.merge and self._has_fix and prev is not None and prev.fix_time == fix_time:
                alt, satellites, hdop = prev.alt, prev.satellites, prev.hdop
            self._last_fix = Fix(s.lat, s.lon, alt, fix_time, received, satellites, hdop)
            self._has_fix = True


def _decode(line: str) -> _Sentence | None:
    text = line.strip()
    if not text:
        return None
    try:
        msg = pynmea2.parse(text, check=True)
    except Exception:  # ParseError mostly, but junk can trip other errors inside pynmea2
        return _BAD
    if isinstance(msg, pynmea2.GGA):
        return _decode_gga(msg)
    if isinstance(msg, pynmea2.RMC):
        return _decode_rmc(msg)
    return _OTHER


def _decode_gga(msg: Any) -> _Sentence:
    tod = _time_of_day(msg.timestamp)
    quality = msg.gps_qual  # pynmea2 leaves the raw string when int() fails
    if not isinstance(quality, int):
        return _BAD
    if quality == 0 or not msg.lat:
        return _Sentence("lost", tod)
    lat = _degrees(msg.lat, msg.lat_dir, "N", "S", 90.0)
    lon = _degrees(msg.lon, msg.lon_dir, "E", "W", 180.0)
    if tod is None or lat is None or lon is None:
        return _BAD
    alt = msg.altitude if isinstance(msg.altitude, float) else None
    return _Sentence(
        "fix", tod, None, lat, lon, alt, _to_int(msg.num_sats), _to_float(msg.horizontal_dil)
    )


def _decode_rmc(msg: Any) -> _Sentence:
    tod = _time_of_day(msg.timestamp)
    date = msg.datestamp if isinstance(msg.datestamp, dt.date) else None
    if msg.status != "A" or not msg.lat:
        return _Sentence("lost", tod, date)
    lat = _degrees(msg.lat, msg.lat_dir, "N", "S", 90.0)
    lon = _degrees(msg.lon, msg.lon_dir, "E", "W", 180.0)
    if tod is None or lat is None or lon is None:
        return _BAD
    return _Sentence("fix", tod, date, lat, lon, merge=True)


def _timeline(sentences: list[_Sentence], fallback_date: dt.date) -> tuple[list[_Timed], float]:
    """Route times and epochs for each sentence, and the length of one lap."""
    first = next((s.tod for s in sentences if s.tod is not None), 0.0)
    placed: list[tuple[float, int, _Sentence]] = []
    due, day, prev_tod = 0.0, 0, None
    for s in sentences:
        if s.tod is not None:
            if prev_tod is not None and s.tod < prev_tod - 43_200:
                day += 1  # the time of day wrapped: we passed UTC midnight
            prev_tod = s.tod
            due = max(due, day * 86_400 + s.tod - first)
        placed.append((due, day, s))  # a sentence without a time goes with the one before

    midnight0 = next(
        (_utc_midnight(s.date) - d * 86_400 for _, d, s in placed if s.date is not None),
        _utc_midnight(fallback_date),
    )
    timed = [
        _Timed(due, None if s.tod is None else midnight0 + d * 86_400 + s.tod, s)
        for due, d, s in placed
    ]
    # One lap is the route span plus one reporting interval, so the restart is on the beat.
    dues = sorted({t.due for t in timed})
    steps = [b - a for a, b in itertools.pairwise(dues)]
    step = min(steps) if steps else 1.0
    return timed, (dues[-1] if dues else 0.0) + step


def _time_of_day(value: object) -> float | None:
    if not isinstance(value, dt.time):
        return None
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


def _utc_midnight(date: dt.date) -> float:
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp()


def _degrees(
    value: str, hemisphere: str, positive: str, negative: str, limit: float
) -> float | None:
    """NMEA ``dddmm.mmmm`` plus hemisphere to signed decimal degrees, None if malformed."""
    m = _DM.match(value)
    if m is None or hemisphere not in (positive, negative):
        return None
    minutes = float(m.group(2))
    deg = int(m.group(1)) + minutes / 60
    if minutes >= 60 or deg > limit:
        return None
    return deg if hemisphere == positive else -deg


def _to_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _to_float(value: object) -> float | None:
    try:
        f = float(str(value))
    except ValueError:
        return None
    return f if math.isfinite(f) else None


# --- gpsd --------------------------------------------------------------------------------

_WATCH = b'?WATCH={"enable":true,"json":true};\n'
_MAX_LINE = 64 * 1024  # gpsd reports are a few hundred bytes; anything longer is garbage
_TICK = 0.05  # s of real time between looks at the clock while waiting to reconnect
_RECV_BACKSTOP = 1.0  # s: a blocked read looks whether close() was called


class Backoff:
    """Delays between reconnection attempts: ``initial`` seconds, doubling up to ``maximum``,
    back to ``initial`` after a session that worked.

    Example::

        backoff = Backoff(0.5, 2.0)
        [backoff.next() for _ in range(4)]   # [0.5, 1.0, 2.0, 2.0]
        backoff.reset()
        backoff.next()                       # 0.5
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._delay = self.initial


class GpsdClient:
    """A minimal client for gpsd's JSON protocol, read in a daemon thread.

    Connects to ``host:port``, asks for JSON reports with ``?WATCH``, and keeps the latest
    TPV report (``mode`` 2 or 3 is a fix) plus satellites in use and HDOP from SKY reports.
    Malformed lines are counted in ``bad_reports`` and skipped. When the connection drops
    the client reports no fix, keeps the last one, and reconnects with exponential backoff
    (:class:`Backoff`) between ``retry_initial`` and ``retry_max`` seconds of the clock;
    ``next_attempt`` is the clock time of the next attempt while it waits. A fix not
    refreshed for ``stale_after`` clock seconds is reported as lost, because a receiver that
    stopped talking has no fix we can vouch for. Timeouts on the socket itself are real time.
    """

    def __init__(
        self,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 2947,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        stale_after: float = 5.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self._clock = clock
        self._address = (host, port)
        self._backoff = Backoff(retry_initial, retry_max)
        self._stale_after = stale_after
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._last_fix: Fix | None = None
        self._has_fix = False
        self._satellites: int | None = None
        self._hdop: float | None = None
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self.attempts = 0  # connections tried
        self.connects = 0  # sessions that got as far as sending ?WATCH
        self.next_attempt: float | None = None  # clock.monotonic() of the next attempt
        self.bad_reports = 0
        self._thread = threading.Thread(target=self._run, name=f"gpsd {host}:{port}", daemon=True)
        self._thread.start()

    def state(self) -> GnssState:
        with self._lock:
            fix, has_fix = self._last_fix, self._has_fix
        if has_fix and fix is not None:
            has_fix = self._clock.monotonic() - fix.received <= self._stale_after
        return GnssState(last_fix=fix, has_fix=has_fix)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
        self._thread.join(timeout=self._connect_timeout + 2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got_reports = self._session()
            except Exception:  # the thread must outlive any surprise; state() stays usable
                _log.exception("gpsd client failed; reconnecting")
                got_reports = False
            with self._lock:
                self._has_fix = False
            if got_reports:
                self._backoff.reset()  # a working session starts the delays again
            if self._pause(self._backoff.next()):
                break

    def _pause(self, seconds: float) -> bool:
        """Waits ``seconds`` of the clock (a simulated one moves only when told); True if
        close() came first."""
        self.next_attempt = until = self._clock.monotonic() + seconds
        try:
            while (left := until - self._clock.monotonic()) > 0:
                if self._stop.wait(min(left, _TICK)):
                    return True
            return self._stop.is_set()
        finally:
            self.next_attempt = None

    def _session(self) -> bool:
        """One connection, until it drops or we close; returns whether anything arrived."""
        self.attempts += 1
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        except OSError:
            return False
        got_reports = False
        with sock:
            with self._lock:
                if self._stop.is_set():  # close() ran while we were connecting
                    return False
                self._sock = sock
            try:
                sock.sendall(_WATCH)
                self.connects += 1
                sock.settimeout(_RECV_BACKSTOP)  # shutdown() in close() is the norm
                buffer = b""
                while not self._stop.is_set():
                    try:
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        continue  # gpsd is quiet when no receiver is attached
                    if not chunk:
                        break
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        got_reports = True
                        self._handle(line)
                    if len(buffer) > _MAX_LINE:
                        buffer = b""
                        self.bad_reports += 1
            except OSError:
                pass
            finally:
                with self._lock:
                    self._sock = None
        return got_reports

    def _handle(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            report = json.loads(line)
        except (ValueError, RecursionError):  # bad JSON or bad UTF-8 are both ValueErrors
            self.bad_reports += 1
            return
        if not isinstance(report, dict):
            self.bad_reports += 1
        elif report.get("class") == "TPV":
            self._on_tpv(report)
        elif report.get("class") == "SKY":
            self._on_sky(report)

    def _on_tpv(self, report: dict[str, Any]) -> None:
        mode = _number(report.get("mode"))
        if mode is None:
            self.bad_reports += 1
            return
        if mode < 2:
            with self._lock:
                self._has_fix = False
            return
        lat, lon = _number(report.get("lat")), _number(report.get("lon"))
        fix_time = _iso_to_epoch(report.get("time"))
        if "time" not in report and lat is not None and lon is not None:
            return  # gpsd's first fixes, before the receiver gave it the date: wait for one
        if lat is None or lon is None or fix_time is None or abs(lat) > 90 or abs(lon) > 180:
            self.bad_reports += 1  # a fix we cannot place or date is no use as evidence
            return
        alt = _number(report.get("altMSL", report.get("alt")))
        with self._lock:
            fix = Fix(
                lat, lon, alt, fix_time, self._clock.monotonic(), self._satellites, self._hdop
            )
            self._last_fix, self._has_fix = fix, True

    def _on_sky(self, report: dict[str, Any]) -> None:
        used = _number(report.get("uSat"))
        satellites = report.get("satellites")
        if used is None and isinstance(satellites, list):  # gpsd before 3.23 has no uSat
            used = sum(1 for s in satellites if isinstance(s, dict) and s.get("used") is True)
        hdop = _number(report.get("hdop"))
        with self._lock:
            if used is not None:
                self._satellites = int(used)
            if hdop is not None:
                self._hdop = hdop


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _iso_to_epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # gpsd times are UTC
    return when.timestamp()

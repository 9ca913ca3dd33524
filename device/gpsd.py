"""The gpsd backend of the GNSS port: :class:`GpsdClient` reads gpsd's JSON reports in a
daemon thread and keeps the latest fix, reconnecting with backoff when gpsd goes away.

Example::

    gnss = GpsdClient(SystemClock(), "127.0.0.1", 2947)
    gnss.state()        # GnssState(last_fix=Fix(...), has_fix=True) once gpsd reports a fix
    gnss.close()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import socket
import threading
from typing import Any

from device.backoff import Backoff
from device.clock import Clock
from device.gnss import Fix, GnssState

_log = logging.getLogger(__name__)

_WATCH = b'?WATCH={"enable":true,"json":true};\n'
_MAX_LINE = 64 * 1024  # gpsd reports are a few hundred bytes; anything longer is garbage
_TICK = 0.05  # s of real time between looks at the clock while waiting to reconnect
_RECV_BACKSTOP = 1.0  # s: a blocked read looks whether close() was called


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

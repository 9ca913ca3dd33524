"""A GNSS receiver on a serial line: the :class:`~device.gnss.Gnss` port on a tty that
speaks NMEA 0183 (a USB receiver's ``/dev/ttyACM0``, a Pi HAT's ``/dev/serial0``).

:class:`SerialNmeaReceiver` reads the line in a daemon thread and keeps the latest fix,
decoding each sentence with the NMEA parsing of :mod:`device.nmea`, so the replayed
routes and the real receiver agree on what a sentence means. A receiver that was unplugged
reports no fix (the last one kept) and is opened again, with backoff, when it comes back.

Example::

    gnss = SerialNmeaReceiver("/dev/ttyACM0", SystemClock(), baud=9600)
    gnss.state()        # GnssState(last_fix=Fix(...), has_fix=True) once sentences arrive
    gnss.close()
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import stat
import termios
import threading
import tty

from device.backoff import Backoff
from device.clock import Clock
from device.gnss import Fix, GnssState
from device.nmea import decode_sentence, utc_midnight

_log = logging.getLogger(__name__)
_MAX_LINE = 256  # NMEA allows 82 characters; anything much longer is line noise
_POLL = 0.5  # s: a quiet line looks this often whether close() was called
_BAUDS = {b: getattr(termios, f"B{b}") for b in (4800, 9600, 19200, 38400, 57600, 115200)}


class NmeaFixes:
    """The receiver's state, from the NMEA lines it sent, one at a time.

    GGA and RMC for the same epoch merge: the RMC keeps the GGA's altitude, satellites and
    HDOP. A GGA carries no date, so its fix is dated by the last RMC's date, or the clock's
    UTC day before any RMC came.

    Example::

        fixes = NmeaFixes(clock)
        fixes.feed("$GPGGA,013000.00,3149.2362,N,11713.6328,E,1,07,1.6,29.5,M,-3.2,M,,*4C", 0.0)
        fixes.state().has_fix   # True
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._date: dt.date | None = None
        self.last_fix: Fix | None = None
        self.has_fix = False
        self.bad_sentences = 0

    def feed(self, line: str, received: float) -> None:
        s = decode_sentence(line)
        if s is None or s.kind == "other":
            return
        if s.date is not None:
            self._date = s.date
        if s.kind == "bad":
            self.bad_sentences += 1
        elif s.kind == "lost":
            self.has_fix = False
        elif s.tod is not None:
            date = self._date or dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC).date()
            fix_time = utc_midnight(date) + s.tod
            alt, satellites, hdop = s.alt, s.satellites, s.hdop
            prev = self.last_fix
            if s.merge and self.has_fix and prev is not None and prev.fix_time == fix_time:
                alt, satellites, hdop = prev.alt, prev.satellites, prev.hdop
            self.last_fix = Fix(s.lat, s.lon, alt, fix_time, received, satellites, hdop)
            self.has_fix = True

    def lost(self) -> None:
        self.has_fix = False


class SerialNmeaReceiver:
    """NMEA from a serial device, read in a daemon thread; see the module docstring.

    ``path`` is the tty, ``baud`` its speed (ignored for a pseudo-terminal). A fix not
    refreshed for ``stale_after`` clock seconds is reported as lost, as with gpsd. A path
    that does not exist or is not a character device is a ValueError naming it.
    """

    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        baud: int = 9600,
        stale_after: float = 5.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        if baud not in _BAUDS:
            raise ValueError(f"unsupported baud rate {baud} (use one of {sorted(_BAUDS)})")
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ValueError(f"no GNSS serial device {path}: {exc.strerror}") from None
        if not stat.S_ISCHR(mode):
            raise ValueError(f"{path} is not a serial device (not a character device)")
        self.path, self.baud = path, baud
        self._clock = clock
        self._stale_after = stale_after
        self._backoff = Backoff(retry_initial, retry_max)
        self._fixes = NmeaFixes(clock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.problem: str | None = None  # why the device is not being read, if it is not
        self._thread = threading.Thread(target=self._run, name=f"nmea {path}", daemon=True)
        self._thread.start()

    @property
    def bad_sentences(self) -> int:
        return self._fixes.bad_sentences

    def state(self) -> GnssState:
        with self._lock:
            fix, has_fix = self._fixes.last_fix, self._fixes.has_fix
        if has_fix and fix is not None:
            has_fix = self._clock.monotonic() - fix.received <= self._stale_after
        return GnssState(last_fix=fix, has_fix=has_fix)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_POLL + 2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                self.problem = f"cannot open {self.path}: {exc.strerror}"
            else:
                self.problem = None
                try:
                    self._read(fd)
                except OSError as exc:  # EIO: the receiver was unplugged
                    self.problem = f"{self.path} went away: {exc.strerror}"
                except Exception:  # the thread must outlive any surprise; state() stays usable
                    _log.exception("NMEA reader for %s failed; reopening", self.path)
                    self.problem = f"reading {self.path} failed"
                finally:
                    os.close(fd)
            with self._lock:
                self._fixes.lost()
            if self._stop.wait(self._backoff.next()):
                break

    def _read(self, fd: int) -> None:
        if os.isatty(fd):
            # No echo, no line editing: bytes as the receiver sent them. TCSANOW, not the
            # default flush, keeps what arrived while we opened the line.
            tty.setraw(fd, termios.TCSANOW)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = _BAUDS[self.baud]
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], _POLL)
            if not ready:
                continue
            chunk = os.read(fd, 1024)
            if not chunk:
                return  # end of file: the other end closed
            self._backoff.reset()
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                self._feed(raw)
            if len(buffer) > _MAX_LINE:
                buffer = b""
                with self._lock:
                    self._fixes.bad_sentences += 1

    def _feed(self, raw: bytes) -> None:
        line = raw.decode("ascii", errors="replace")
        received = self._clock.monotonic()
        with self._lock:
            self._fixes.feed(line, received)

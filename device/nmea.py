"""NMEA 0183 sentences: one line of a receiver's output decoded into what it says of the fix.

The one reading of GGA and RMC that the replayed routes (:mod:`device.nmea_replay`) and the
serial receiver (:mod:`device.nmea_serial`) share, so both agree on what a sentence means. A
line with a bad or missing checksum, that fails to parse, or that claims a fix without a
usable time or position decodes as ``bad``: never an exception.

Example::

    s = decode_sentence("$GPGGA,013000.00,3149.2362,N,11713.6328,E,1,07,1.6,29.5,M,-3.2,M,,*4C")
    s.kind, s.tod, round(s.lat, 6)      # ("fix", 5400.0, 31.820603)
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import pynmea2


@dataclass(frozen=True)
class Sentence:
    """What one NMEA line says: a fix, its loss, a line we cannot trust (``bad``), or a
    sentence that says nothing of the fix (``other``). A route is decoded whole when it is
    loaded, so that replaying it is cheap."""

    kind: Literal["fix", "lost", "bad", "other"]
    tod: float | None = None  # seconds since UTC midnight, if the sentence carries a time
    date: dt.date | None = None  # RMC only
    lat: float = 0.0
    lon: float = 0.0
    alt: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    merge: bool = False  # RMC: keep altitude/satellites/HDOP of the GGA for the same epoch


_BAD = Sentence("bad")
_OTHER = Sentence("other")
_DM = re.compile(r"^(\d{1,3})(\d\d(?:\.\d+)?)$")  # [d]ddmm[.mmmm]


def decode_sentence(line: str) -> Sentence | None:
    """The line's sentence, ``None`` for a blank line."""
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


def _decode_gga(msg: Any) -> Sentence:
    tod = _time_of_day(msg.timestamp)
    quality = msg.gps_qual  # pynmea2 leaves the raw string when int() fails
    if not isinstance(quality, int):
        return _BAD
    if quality == 0 or not msg.lat:
        return Sentence("lost", tod)
    lat = _degrees(msg.lat, msg.lat_dir, "N", "S", 90.0)
    lon = _degrees(msg.lon, msg.lon_dir, "E", "W", 180.0)
    if tod is None or lat is None or lon is None:
        return _BAD
    alt = msg.altitude if isinstance(msg.altitude, float) else None
    return Sentence(
        "fix", tod, None, lat, lon, alt, _to_int(msg.num_sats), _to_float(msg.horizontal_dil)
    )


def _decode_rmc(msg: Any) -> Sentence:
    tod = _time_of_day(msg.timestamp)
    date = msg.datestamp if isinstance(msg.datestamp, dt.date) else None
    if msg.status != "A" or not msg.lat:
        return Sentence("lost", tod, date)
    lat = _degrees(msg.lat, msg.lat_dir, "N", "S", 90.0)
    lon = _degrees(msg.lon, msg.lon_dir, "E", "W", 180.0)
    if tod is None or lat is None or lon is None:
        return _BAD
    return Sentence("fix", tod, date, lat, lon, merge=True)


def _time_of_day(value: object) -> float | None:
    if not isinstance(value, dt.time):
        return None
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


def utc_midnight(date: dt.date) -> float:
    """The epoch of ``date``'s UTC midnight: a sentence's time of day counts from it."""
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

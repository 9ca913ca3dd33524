"""A typed marker on the open session's timeline (R2): its type read, and where the device
was when it was dropped.

Which types there are is :class:`agent.session.MarkerType`'s; sealing the marker on the
session is the recorder's (:meth:`agent.recorder.Recorder.mark`).

Example::

    typed_marker("credential_shown")     # -> MarkerType.CREDENTIAL_SHOWN
    position(gnss.state(), now)          # -> {'fix': True, 'lat': ..., 'lon': ..., 'age': 0.2}
"""

from __future__ import annotations

from typing import Any

from agent.session import MarkerType, SessionError
from device.gnss import GnssState


def typed_marker(marker: MarkerType | str) -> MarkerType:
    try:
        return MarkerType(marker)
    except ValueError:
        raise SessionError(
            f"unknown marker type {marker!r}; one of {', '.join(m.value for m in MarkerType)}"
        ) from None


def position(st: GnssState, now: float) -> dict[str, Any]:
    """Where the device was (``now``: monotonic), as a marker records it."""
    fix = st.last_fix
    return {
        "fix": st.has_fix,
        "lat": fix.lat if fix else None,
        "lon": fix.lon if fix else None,
        "age": st.age(now),
    }

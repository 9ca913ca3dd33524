"""``unbroken sim session``: record one session on a simulated recorder, as an officer would.

The officer arrives (the device has been buffering), presses record, the session runs for
the given time with a credential-shown marker early on, then the officer presses record
twice (press, confirm) to close it.
"""

from __future__ import annotations

from pathlib import Path

from agent.session import MarkerType
from common.settings import DeviceConfig
from evidence.layout import PUBKEY
from simulator.device import SimDevice


def record_session(
    data: Path,
    config: DeviceConfig,
    seconds: float,
    badges: list[str] | None = None,
    category: str | None = None,
    realtime: bool = False,
    arrival: float | None = None,
) -> str:
    """Record; returns a one-paragraph summary. ``arrival``: buffering before the press
    (default: the whole pre-event buffer, so it is full when record is pressed)."""
    if seconds <= 0:
        raise ValueError("--seconds must be positive")
    dev = SimDevice(data, config, realtime=realtime)
    dev.start()
    rec = dev.recorder
    try:
        if badges is not None:
            rec.badges = list(badges)
        pre = config.recording.prebuffer_seconds if arrival is None else arrival
        dev.run(pre)
        if category:
            sid = rec.open_session(category)
        else:
            dev.press_record()
            dev.run(1 / config.recording.fps)
            assert rec.session, "record press did not open a session"
            sid = rec.session.id
        dev.run(min(1.0, seconds / 2))
        rec.mark(MarkerType.CREDENTIAL_SHOWN, "officer showed credential")
        dev.run(max(0.0, seconds - min(1.0, seconds / 2)))
        dev.press_record()
        dev.press_record()  # confirm: a single press would only arm the close
        dev.run(1 / config.recording.fps)
    finally:
        dev.stop()
    return (
        f"session {sid} recorded: {seconds:g} s after the press, {pre:g} s pre-event buffer\n"
        f"evidence in {data}, device key {data / PUBKEY}\n"
        f"verify with: unbroken verify {data} --pubkey {data / PUBKEY}"
    )

"""What of the store report to show, and its summary: pure functions of the report that
:func:`store.report.build_report` makes.

- :func:`parse_since`: ``--since`` as a time (ISO date or date and time, UTC unless it
  says otherwise, or a span back from now: ``90m``, ``24h``, ``7d``)
- :func:`since`: sessions opened from then on (a device without one still shows if its
  status came in since)
- :func:`needing_attention`: only what needs attention (``--problems``), what does not
  read among it
- :func:`summary`: the counts of what is shown (interviews not recorded and what does not
  read among them)

Example::

    report = needing_attention(since(build_report(db, now), parse_since("7d", now)))
    report["summary"] = summary(report)
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([mhd])")
_UNIT = {"m": 60.0, "h": 3600.0, "d": 86400.0}


class SinceError(ValueError):
    """``--since`` is neither a date, a date and time nor a span like ``24h``."""


def parse_since(text: str, now: float) -> float:
    """The time ``text`` names, in seconds since the epoch."""
    t = text.strip()
    if m := _SPAN.fullmatch(t):
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError:
        raise SinceError(
            f"--since {text!r}: expected an ISO date or date and time (2026-03-14, "
            "2026-03-14T08:00, UTC unless it names a zone) or a span back from now "
            "(90m, 24h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def session_attention(s: dict[str, Any]) -> list[str]:
    """Why a session needs someone's attention (empty: it does not)."""
    why = []
    if s["overdue"]:
        why.append(f"{s['overdue']} overdue")
    if s["late"]:
        why.append(f"{s['late']} late")
    if unexplained := sum(1 for g in s["gaps"] if g["explanation"] is None):
        why.append(f"{unexplained} gap(s) unexplained")
    if s["in_the_clear"]:
        why.append(f"{s['in_the_clear']} in the clear")
    if unreadable := s.get("unreadable"):
        why.append(f"{len(unreadable)} unreadable")
    return why


def device_attention(d: dict[str, Any]) -> list[str]:
    """Why a device's chain needs attention, apart from its sessions."""
    why = []
    if d["gaps"]:
        why.append(f"{len(d['gaps'])} chain gap(s)")
    if d["problems"]:
        why.append(f"{len(d['problems'])} chain problem(s)")
    if d["fork"]:
        why.append("a fork")
    if d.get("status_unreadable"):
        why.append("its status unreadable")
    return why


def since(report: dict[str, Any], t: float) -> dict[str, Any]:
    """Sessions opened at ``t`` or later (or whose opening was not received: their time is
    unknown, so they are not left out); devices with none are kept if they reported since."""
    devices = []
    for d in report["devices"]:
        sessions = [s for s in d["sessions"] if s["opened"] is None or s["opened"] >= t]
        if sessions or (d["status_at"] or 0.0) >= t:
            devices.append({**d, "sessions": sessions})
    lost = [i for i in report.get("not_recorded", []) if i["issued"] >= t]
    return {**_with_devices(report, devices), "not_recorded": lost}


def needing_attention(report: dict[str, Any]) -> dict[str, Any]:
    """Only devices and sessions that need attention (their other sessions left out)."""
    devices = []
    for d in report["devices"]:
        sessions = [s for s in d["sessions"] if session_attention(s)]
        if sessions or device_attention(d):
            devices.append({**d, "sessions": sessions})
    return _with_devices(report, devices)


def _with_devices(report: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
    shown = {d["device"] for d in devices}
    return {
        **report,
        "devices": devices,
        "weaker_key_stores": [d for d in report["weaker_key_stores"] if d in shown],
        "footage_in_the_clear": [d for d in report["footage_in_the_clear"] if d in shown],
    }


def summary(report: dict[str, Any]) -> dict[str, int]:
    """Counts over what the report shows. ``problems``: chain gaps, chain problems and
    forks, and overdue segments (unexplained gaps and late segments are counted apart)."""
    devices = report["devices"]
    sessions = [s for d in devices for s in d["sessions"]]
    return {
        "devices": len(devices),
        "sessions": len(sessions),
        "segments": sum(s["segments"] for s in sessions),
        "late": sum(s["late"] for s in sessions),
        "overdue": sum(s["overdue"] for s in sessions),
        "gaps_unexplained": sum(1 for s in sessions for g in s["gaps"] if g["explanation"] is None),
        "problems": sum(len(d["gaps"]) + len(d["problems"]) + bool(d["fork"]) for d in devices)
        + sum(s["overdue"] for s in sessions),
        "not_recorded": len(report.get("not_recorded", [])),
        # entries of a session, and statuses, the report could not read
        "unreadable": sum(len(s.get("unreadable", [])) for s in sessions)
        + sum(bool(d.get("status_unreadable")) for d in devices),
    }


def summary_line(counts: dict[str, int]) -> str:
    def n(k: int, one: str, many: str) -> str:
        return f"{k} {one if k == 1 else many}"

    return (
        f"Summary: {n(counts['devices'], 'device', 'devices')}, "
        f"{n(counts['sessions'], 'session', 'sessions')}, "
        f"{n(counts['segments'], 'segment', 'segments')}, {counts['late']} late, "
        f"{n(counts['gaps_unexplained'], 'gap', 'gaps')} unexplained, "
        f"{n(counts['problems'], 'problem', 'problems')}"
        + (
            f", {n(lost, 'interview', 'interviews')} NOT RECORDED"
            if (lost := counts.get("not_recorded", 0))
            else ""
        )
        + (f", {unreadable} UNREADABLE" if (unreadable := counts.get("unreadable", 0)) else "")
    )

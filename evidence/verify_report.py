"""A verification report as people read it. Pure formatting."""

from __future__ import annotations

import datetime as dt

from evidence.verify import Report


def _when(wall: float | None) -> str:
    if wall is None:
        return "-"
    return dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_report(r: Report, source: str) -> str:
    lines = [f"Evidence: {source}", f"Device:   {r.device or '(unknown)'}"]
    key = f"key {r.key_id}"
    pin = "" if r.pinned else "  (NOT PINNED: taken from the directory)"
    lines.append(f"Key:      {key}{pin}")
    lines.append(f"Entries:  {r.entries}")
    for s in r.sessions:
        lines += [
            "",
            f"Session {s.id}  [{s.state}]",
            f"  category  {s.category}   badges {', '.join(s.badges) or '-'}",
            f"  opened    {_when(s.opened)}   closed {_when(s.closed)}",
            *([f"  room      {s.room}   case {s.case or '-'}"] if s.room or s.case else []),
            f"  segments  {s.segments}   duration {s.duration:.1f} s   "
            f"pre-event {s.prebuffer:.1f} s"
            + (f"   {s.archived} at the agency only (receipted)" if s.archived else ""),
        ]
        if len(s.tracks) > 1:
            lines += [
                f"  track     {name}: {t['segments']} segments, {t['duration']:.1f} s"
                for name, t in s.tracks.items()
            ]
        for m in s.markers:
            lines.append(f"  marker    {_when(m['wall'])}  {m['type']}")
        lines.append(
            "  recording continuous" if s.continuous else f"  recording has {len(s.gaps)} gap(s):"
        )
        for g in s.gaps:
            length = "never resumed" if g["length"] is None else f"{g['length']:.1f} s"
            how = g["explanation"] or "UNEXPLAINED"
            if g["explanation"] == "written" and g["statement"]:
                officers = ", ".join(a["badge"] for a in g["statement"]["attestations"])
                how = f"written statement by {officers}"
            on = f" on {', '.join(g['tracks'])}" if g.get("tracks") else ""
            lines.append(
                f"  gap       {_when(g['start'])}  {g['cause']} ({', '.join(g['affects'])}){on}, "
                f"{length}; explanation: {how}"
            )
        for p in s.problems:
            lines.append(f"  PROBLEM   {p.code}: {p.where}: {p.message}")
    unattached = [p for p in r.problems if p.session is None]
    if unattached:
        lines.append("")
        for p in unattached:
            lines.append(f"PROBLEM {p.code}: {p.where}: {p.message}")
    lines += [f"NOTICE {n.code}: {n.where}: {n.message}" for n in r.notices]
    lines += [
        "",
        "RESULT: OK" if r.ok else f"RESULT: FAILED ({_count(len(r.problems), 'problem')})",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

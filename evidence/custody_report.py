"""A custody summary as people read it: the text file beside an export, and the sealed
times as the summary writes them (:func:`when`). Pure formatting.

Example::

    (out / f"{session}-custody.txt").write_text(format_custody(summary.as_dict()))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


def format_custody(d: Mapping[str, Any]) -> str:
    """The summary (:meth:`CustodySummary.as_dict`) as the text file beside the export."""
    v = d["verification"]
    c = d["collector"]
    lines = [
        f"CUSTODY SUMMARY — session {d['session']}",
        f"Source:      {d['source'] or '-'}",
        f"Device:      {d['device']['id']}   key {d['device']['key_id']}"
        + ("" if d["device"]["key_pinned"] else "  (NOT PINNED: key taken from the directory)"),
        f"Officers:    {', '.join(c['badges']) or '-'}"
        + (f"   in the picture: {', '.join(c['in_picture'])}" if c["in_picture"] else ""),
    ]
    if c["assigned"] and "unreadable" in c["assigned"]:  # an assignment entry that did not read
        lines.append(f"Assigned:    UNREADABLE ({c['assigned']['unreadable']})")
    elif c["assigned"]:
        a = c["assigned"]
        lines.append(
            f"Assigned:    {a.get('name') or '-'} ({a.get('unit') or '-'}), badges "
            f"{', '.join(a.get('badges') or []) or '-'}, by agency key {a.get('agency')}"
        )
    lines += [
        f"Category:    {d['category']}",
        *([f"Room:        {d['room']}   trigger {d['trigger'] or '-'}"] if d["room"] else []),
        *([f"Case:        {d['case']}   person {d['person'] or '-'}"] if d["case"] else []),
        f"Opened:      {_t(d['opened'])}",
        f"Closed:      {_t(d['closed']) if d['closed'] else 'NOT CLOSED'}",
        *_close_lines(d.get("close_counts")),
        f"Footage:     {_t(d['footage']['start'])} to {_t(d['footage']['end'])}, "
        f"{d['footage']['seconds']:.1f} s recorded in {d['footage']['segments']} segment(s)",
    ]
    lines += _place_lines(d["places"])
    for m in d["markers"]:
        lines.append(f"Marker:      {m['at']}  {m['type']}  {m['note']}")
    if not d["interruptions"]:
        lines.append("Recording:   continuous, no interruption")
    for g in d["interruptions"]:
        on = "" if g["tracks"] == "all" else f" on {', '.join(g['tracks'])}"
        length = "never resumed" if g["seconds"] is None else f"{g['seconds']:.1f} s"
        lines.append(
            f"Gap:         {g['start']} to {g['end'] or '-'} ({length}), {g['cause']} "
            f"({', '.join(g['affects'])}){on}; explanation: {g['explained']}"
            + ("" if not g["in_export"] else f"; at {g['in_export']['at']:.3f} s of the export")
        )
    lines.append("")
    if v["ok"]:
        lines.append("VERIFICATION: OK — seals, chain and every segment check")
    else:
        accepted = " — EXPORTED ANYWAY, AT THE USER'S REQUEST" if v["accepted"] else ""
        lines.append(f"VERIFICATION: FAILED{accepted}")
        lines += [f"  PROBLEM {p['code']}: {p['where']}: {p['message']}" for p in v["problems"]]
    if v["other_sessions_problems"]:
        lines.append(f"  ({v['other_sessions_problems']} problem(s) in other sessions)")
    lines += [f"  NOTICE {n['code']}: {n['where']}: {n['message']}" for n in v["notices"]]
    for track, t in d["tracks"].items():
        files = ", ".join(f"{f['file']} ({f['duration']:.3f} s)" for f in t["files"])
        lines += ["", f"Track {track}: {files or 'not exported'}"]
        for s in t["segments"]:
            where = (
                f"{s['in_export'][0]:9.3f}-{s['in_export'][1]:.3f} s"
                if s["in_export"]
                else "  LEFT OUT"
            )
            flags = f" in {s['export_file']}" if len(t["files"]) > 1 and s["in_export"] else ""
            flags += " recovered" if s["recovered"] else ""
            flags += " encrypted" if s.get("encrypted_to") else ""
            flags += " pre-event" if s["prebuffer_seconds"] else ""
            flags += "".join(f" {code.upper()}" for code in s["problems"])
            lines.append(
                f"  {s['index']:4d} {where}  sha256 {s['sha256']}  {s['size']} B  "
                f"entry {s['sealed_by']['seq']}  {s['file']}{flags}"
            )
        lines += [f"  NOTE {n}" for n in t["notes"]]
    lines += ["", f"Exported {d['exported_at']} by unbroken {d['software']}".rstrip(), ""]
    lines += ["How to check this export:", *[f"  {step}" for step in d["how_to_check"]]]
    return "\n".join(lines) + "\n"


def when(wall: float | None) -> str | None:
    """A sealed wall time as ISO 8601 with its UTC offset (devices seal UTC); one that no
    calendar holds (a clock far off, a forged body) as the number it is."""
    if wall is None:
        return None
    try:
        return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return f"{wall} (no date)"


def _t(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "-"
    return f"{m['wall']}" + ("" if m["synced"] else " (clock not synced)")


def _close_lines(c: Mapping[str, Any] | None) -> list[str]:
    """What the close states against the segments the chain holds for the session."""
    if not c:
        return []
    held = f"the chain holds {_counts(c['held'])}"
    if c["agrees"]:
        return [f"Counts:      the close states {_counts(c['stated'])}, as {held}"]
    if c["stated"] is None:  # malformed: the reason names what is wrong
        return [f"Counts:      THE CLOSE STATES NO COUNT ({c['mismatch']}); {held}"]
    return [f"Counts:      THE CLOSE IS WRONG: it states {_counts(c['stated'])}, but {held}"]


def _counts(n: Mapping[str, Any]) -> str:
    tracks = ", ".join(f"{t} {k}" for t, k in n["tracks"].items())
    return f"{n['segments']} segment(s)" + (f" ({tracks})" if tracks else "")


def _place_lines(p: Mapping[str, Any]) -> list[str]:
    lines = []
    if p["first"]:
        lines.append(f"Places:      first {_pt(p['first'])}, last {_pt(p['last'])}")
        shown = "; ".join(_pt(x) for x in p["distinct"])
        more = f" and {p['more']} more" if p["more"] else ""
        lines.append(f"             {len(p['distinct'])} distinct: {shown}{more}")
    else:
        lines.append(f"Places:      {'room ' + p['room'] if p['room'] else 'no position fix'}")
    if p["without_fix"]:
        lines.append(f"             {p['without_fix']} segment(s) without a position fix")
    return lines


def _pt(p: Sequence[float]) -> str:
    return f"{p[0]:.5f},{p[1]:.5f}"

"""One device's timeline picture (inline SVG) in a scenario run's report.

Scenario seconds run across and, from the top: what the timeline did to the device (ticks;
power cuts as red lines, boots as green), its sessions with their markers, the spans without
a GNSS fix, one row per track with every sealed segment (pre-event, recorded, recovered after
a power cut; hatched until the store's receipt arrived), every gap over the tracks it
interrupted (blue: explained by voice, purple: written statement, red: unexplained; dashed
when it never resumed), the device's state from its status samples (recording, buffering,
off, offline) and the sync progress: segments sealed against segments receipted, with the
24-hour deadline level the device showed.

Example::

    t_lo, t_hi = time_range(facts)
    svg = device_svg(facts.devices["bwc-1"], facts, t_lo, t_hi)
"""

from __future__ import annotations

import html
import math

from simulator.run_summary import fix_losses, gap_line
from simulator.scenario_facts import DeviceFacts, RunFacts

COLOURS = {
    "segment": "#2e7d32",
    "prebuffer": "#81c784",
    "recovered": "#f9a825",
    "voice": "#1565c0",
    "written": "#7b1fa2",
    "unexplained": "#c62828",
    "session": "#e3f2fd",
    "cut": "#c62828",
    "boot": "#2e7d32",
    "recording": "#e53935",
    "buffering": "#bdbdbd",
    "idle": "#eeeeee",
    "offline": "#616161",
    "sealed": "#757575",
    "receipted": "#2e7d32",
    "warn": "#fbc02d",
    "urgent": "#f57c00",
    "overdue": "#c62828",
    "no_fix": "#8d6e63",
}


def time_range(facts: RunFacts) -> tuple[float, float]:
    """The span every picture shows: from the earliest footage (pre-event buffers start
    before scenario second 0) to the end of the run."""
    lo = 0.0
    hi = max(facts.ended, facts.duration)
    for d in facts.devices.values():
        for s in d.segments:
            lo = min(lo, s.start)
            hi = max(hi, s.end)
        for sample in d.samples:
            hi = max(hi, sample.t)
        for seg in d.segments:
            if seg.receipt_t is not None:
                hi = max(hi, seg.receipt_t)
    return math.floor(lo), math.ceil(hi)


def device_svg(d: DeviceFacts, facts: RunFacts, t_lo: float, t_hi: float) -> str:
    """One device's timeline picture (inline SVG)."""
    width, left, right = 1000, 110, 16
    row, pad = 18, 6
    span = max(1e-6, t_hi - t_lo)

    def x(t: float) -> float:
        return round(left + (min(max(t, t_lo), t_hi) - t_lo) / span * (width - left - right), 2)

    parts: list[str] = []
    labels: list[tuple[float, str]] = []
    y = 20.0
    e = html.escape

    def title(text: str) -> str:
        return f"<title>{e(text)}</title>"

    # what the timeline did
    labels.append((y, "timeline"))
    for a in (a for a in facts.actions if a.device == d.id):
        colour = "#424242" if a.ok else COLOURS["unexplained"]
        parts.append(
            f'<line x1="{x(a.t)}" y1="{y}" x2="{x(a.t)}" y2="{y + row}" stroke="{colour}" '
            f'stroke-width="2">{title(f"{a.t:.1f} s {a.do}: {a.detail}")}</line>'
        )
    y += row + pad
    top_tracks = y
    # sessions and markers
    labels.append((y, "session"))
    for s in d.sessions:
        x0 = x(s.opened if s.opened is not None else t_lo)
        x1 = x(s.closed if s.closed is not None else t_hi)
        label = s.case or s.category or ""
        about = f"session {s.id} {label} badges {', '.join(s.badges)}"
        parts.append(
            f'<rect x="{x0}" y="{y}" width="{max(1.0, x1 - x0)}" height="{row}" '
            f'fill="{COLOURS["session"]}" stroke="#1565c0">{title(about)}</rect>'
        )
        parts.append(f'<text x="{x0 + 3}" y="{y + row - 5}" font-size="11">{e(label)[:40]}</text>')
    for m in d.markers:
        cx = x(m.t)
        parts.append(
            f'<path d="M{cx},{y + 2} l5,7 l-5,7 l-5,-7 z" fill="#ff6f00">'
            f"{title(f'{m.t:.1f} s marker {m.type} {m.note}')}</path>"
        )
    y += row + pad
    # GNSS: where the position in the watermark and manifests is "no fix"
    labels.append((y, "GNSS fix"))
    for lost, back in fix_losses(d, t_hi):
        x0, x1 = x(lost), x(back if back is not None else t_hi)
        again = "not regained" if back is None else f"regained at {back:.1f} s"
        parts.append(
            f'<rect x="{x0}" y="{y + 4}" width="{max(2.0, x1 - x0)}" height="{row - 8}" '
            f'fill="{COLOURS["no_fix"]}" class="no-fix">'
            f"{title(f'GNSS fix lost at {lost:.1f} s, {again}')}</rect>"
        )
    y += row + pad
    # tracks: segments
    track_y: dict[str, float] = {}
    for track in d.tracks:
        labels.append((y, f"track {track}"))
        track_y[track] = y
        for seg in (s for s in d.segments if s.track == track):
            kind = "recovered" if seg.recovered else "prebuffer" if seg.prebuffer else "segment"
            x0, x1 = x(seg.start), x(seg.end)
            fill = COLOURS[kind] if seg.stored_at is not None else f"url(#hatch-{kind})"
            receipt = (
                f"receipted {seg.upload_hours * 3600:.1f} s after recording"
                if seg.upload_hours is not None
                else "no receipt"
            )
            about = f"{track} #{seg.index} {seg.start:.1f}–{seg.end:.1f} s, {kind}, {receipt}"
            parts.append(
                f'<rect x="{x0}" y="{y + 2}" width="{max(0.8, x1 - x0 - 0.5)}" '
                f'height="{row - 4}" fill="{fill}" stroke="{COLOURS[kind]}" stroke-width="0.5">'
                f"{title(about)}</rect>"
            )
        y += row
    bottom_tracks = y
    # gaps over the tracks they interrupted
    for g in d.gaps:
        colour = COLOURS[g.explanation or "unexplained"]
        x0 = x(g.start)
        x1 = x(g.end if g.end is not None else t_hi)
        rows = [track_y[t] for t in (g.tracks or d.tracks) if t in track_y] or [top_tracks]
        dash = ' stroke-dasharray="4 2"' if g.end is None else ""
        for ry in rows:
            parts.append(
                f'<rect x="{x0}" y="{ry}" width="{max(2.0, x1 - x0)}" height="{row}" '
                f'fill="{colour}" fill-opacity="0.55" stroke="{colour}"{dash}>'
                f"{title(gap_line(g) + (' ' + g.detail if g.detail else ''))}</rect>"
            )
    y += pad
    # power cuts and boots across everything above
    for c in d.cuts:
        parts.append(
            f'<line x1="{x(c.t)}" y1="20" x2="{x(c.t)}" y2="{bottom_tracks}" '
            f'stroke="{COLOURS["cut"]}" stroke-width="2" stroke-dasharray="3 2">'
            f"{title(f'power cut at {c.t:.1f} s, footage lost {c.lost}')}</line>"
        )
    for b in d.boots:
        parts.append(
            f'<path d="M{x(b)},{top_tracks - 2} l-4,-6 h8 z" fill="{COLOURS["boot"]}">'
            f"{title(f'boot at {b:.1f} s')}</path>"
        )
    # the device's state from its status samples
    labels.append((y, "state"))
    samples = d.samples
    for i, sm in enumerate(samples):
        end = samples[i + 1].t if i + 1 < len(samples) else sm.t + 1.0
        if end - sm.t > 3.0:
            end = sm.t + 1.0  # no answer in between: the device was off
        colour = COLOURS.get(sm.state, COLOURS["idle"])
        battery = "" if sm.battery is None else f", battery {sm.battery:.0f} %"
        w = max(0.5, x(end) - x(sm.t))
        parts.append(
            f'<rect x="{x(sm.t)}" y="{y + 2}" width="{w}" height="{row - 10}" '
            f'fill="{colour}">{title(f"{sm.t:.1f} s {sm.state}, network {sm.network}{battery}")}'
            "</rect>"
        )
        if sm.network is False:  # a strip under the state: the network was down
            parts.append(
                f'<rect x="{x(sm.t)}" y="{y + row - 6}" width="{w}" height="4" '
                f'fill="{COLOURS["offline"]}"><title>network down</title></rect>'
            )
    y += row + pad
    # sync progress
    labels.append((y, "sync"))
    h = 40.0
    total = max(1, len(d.segments))
    sealed = sorted(s.sealed for s in d.segments)
    receipted = sorted(s.receipt_t for s in d.segments if s.receipt_t is not None)
    for times, colour in ((sealed, COLOURS["sealed"]), (receipted, COLOURS["receipted"])):
        if times:
            pts = [f"{x(t_lo)},{y + h}"]
            for n, t in enumerate(times, 1):
                prev = y + h - (n - 1) / total * h
                cur = y + h - n / total * h
                pts += [f"{x(t)},{prev:.1f}", f"{x(t)},{cur:.1f}"]
            pts.append(f"{x(t_hi)},{y + h - len(times) / total * h:.1f}")
            parts.append(
                f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                f'stroke-width="2"/>'
            )
    for sm in samples:
        if sm.deadline in ("warn", "urgent", "overdue"):
            parts.append(
                f'<circle cx="{x(sm.t)}" cy="{y + 4}" r="3.5" fill="{COLOURS[sm.deadline]}">'
                f"{title(f'{sm.t:.1f} s deadline {sm.deadline}')}</circle>"
            )
    parts.append(
        f'<text x="{width - right}" y="{y + 10}" font-size="10" text-anchor="end">'
        f"{len(receipted)}/{len(sealed)} receipted</text>"
    )
    y += h + pad
    # the axis
    axis = [f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="#9e9e9e"/>']
    step = nice_step(span)
    t = math.ceil(t_lo / step) * step
    while t <= t_hi + 1e-9:
        axis.append(
            f'<line x1="{x(t)}" y1="{y}" x2="{x(t)}" y2="{y + 4}" stroke="#9e9e9e"/>'
            f'<text x="{x(t)}" y="{y + 15}" font-size="10" text-anchor="middle">{t:g} s</text>'
        )
        if t == 0:
            axis.append(
                f'<line x1="{x(0)}" y1="16" x2="{x(0)}" y2="{y}" stroke="#9e9e9e" '
                'stroke-dasharray="1 3"/>'
            )
        t += step
    y += 22
    names = "".join(
        f'<text x="4" y="{ly + row - 5}" font-size="11" fill="#424242">{e(name)}</text>'
        for ly, name in labels
    )
    defs = "".join(
        f'<pattern id="hatch-{k}" width="5" height="5" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="5" height="5" fill="white"/>'
        f'<line x1="0" y1="0" x2="0" y2="5" stroke="{COLOURS[k]}" stroke-width="3"/></pattern>'
        for k in ("segment", "prebuffer", "recovered")
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" data-device="{e(d.id)}" '
        f'width="{width}" height="{y:.0f}" viewBox="0 0 {width} {y:.0f}">'
        f"<defs>{defs}</defs>"
        f'<text x="4" y="12" font-size="12" font-weight="bold">{e(d.id)}</text>'
        f"{names}{''.join(parts)}{''.join(axis)}</svg>"
    )


def nice_step(span: float) -> float:
    """An axis tick interval giving about ten ticks: 1, 2, 5, 10, 20, 30, 60, 120 …"""
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 12:
            return float(step)
    return 7200.0

"""A scenario run's summary on the terminal: per device its sessions, gaps, power cuts, fix
losses, chain problems and uploads, the timeline actions refused, and each expectation with
the verdict.

The words for a gap and a fix loss are said here once; the HTML report
(:mod:`simulator.timeline_report`) and its pictures (:mod:`simulator.timeline_picture`) say
them the same way.

Example::

    print(format_text(scenario, facts, outcomes, Path("out/report.html")))
"""

from __future__ import annotations

from pathlib import Path

from simulator.scenario_facts import DeviceFacts, GapFact, Outcome, RunFacts
from simulator.scenario_model import Scenario


def fix_losses(d: DeviceFacts, t_end: float) -> list[tuple[float, float | None]]:
    """The spans without a GNSS fix, from the chain's ``gnss_lost``/``gnss_regained``
    events (end None: not regained before the run ended)."""
    spans: list[tuple[float, float | None]] = []
    lost: float | None = None
    for at, kind in sorted(d.events):
        if kind == "gnss_lost" and lost is None:
            lost = at
        elif kind == "gnss_regained" and lost is not None:
            spans.append((lost, at))
            lost = None
    if lost is not None:
        spans.append((lost, None))
    return [(a, b) for a, b in spans if a <= t_end]


def format_text(
    scenario: Scenario, facts: RunFacts, outcomes: list[Outcome], html_path: Path | None = None
) -> str:
    """The run's summary, ending with the result and, when one was written, the report's path."""
    lines = [
        "",
        f"Scenario {scenario.name} ({facts.mode}): {len(facts.devices)} device(s), timeline "
        f"{facts.duration:g} s, ended at {facts.ended:.1f} s; "
        f"the run took {facts.wall_seconds:.1f} s",
    ]
    for d in facts.devices.values():
        lines += device_text(d)
    failed_actions = [a for a in facts.actions if not a.ok]
    if failed_actions:
        lines.append("Timeline actions refused:")
        lines += [f"  {a.t:7.1f} s {a.device}: {a.do}: {a.detail}" for a in failed_actions]
    for n in facts.notes:
        lines.append(f"Note: {n}")
    lines.append("Expectations:")
    for o in outcomes:
        lines.append(f"  {'PASS' if o.ok else 'FAIL'}  {o.name}: {o.detail}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines.append(
            f"RESULT: FAIL: {len(failed)} of {len(outcomes)} expectations failed: "
            + ", ".join(o.name for o in failed)
        )
    else:
        lines.append(f"RESULT: PASS: {len(outcomes)} of {len(outcomes)} expectations met")
    if html_path is not None:
        lines.append(f"report: {html_path}")
    return "\n".join(lines)


def device_text(d: DeviceFacts) -> list[str]:
    """What the summary says of one device; its first line is the device's headline."""
    receipted = sum(s.stored_at is not None for s in d.segments)
    chain = "chain ok" if d.verify_ok else f"chain: {len(d.problems)} problem(s)"
    out = [
        f"Device {d.id} ({d.kind}): {len(d.sessions)} session(s), {len(d.segments)} segments "
        f"({receipted} receipted), {len(d.gaps)} gap(s), {len(d.markers)} marker(s); {chain}"
    ]
    if len(d.sessions) <= 4:
        for s in d.sessions:
            closed = "open" if s.closed is None else f"{s.closed:.1f} s"
            tracks = ", ".join(f"{t} {n}" for t, n in s.tracks.items())
            label = s.case or s.category or ""
            out.append(f"  session {s.id[:8]} {_t(s.opened)}–{closed} {label}: {tracks}")
            out += [f"    gap {gap_line(g)}" for g in d.gaps if g.session == s.id]
    elif d.gaps:
        out.append(f"  gaps: {'; '.join(gap_line(g) for g in d.gaps[:3])}")
    for c in d.cuts:
        lost = "-" if c.lost is None else f"{c.lost:.2f} s"
        where = "in a session" if c.session else "outside a session"
        out.append(f"  power cut at {c.t:.1f} s ({where}): footage lost {lost}")
    for why in d.cut_problems:
        out.append(f"  power cuts: {why}")
    for gone, back in fix_losses(d, float("inf")):
        again = "not regained" if back is None else f"regained at {back:.1f} s"
        out.append(f"  GNSS fix lost at {gone:.1f} s, {again}")
    for prob in d.problems[:5]:
        out.append(f"  PROBLEM {prob['code']} at {prob['where']}: {prob['message']}")
    hours = [s.upload_hours for s in d.segments if s.upload_hours is not None]
    if hours:
        slowest = max(hours)
        shown = f"{slowest:.1f} h" if slowest >= 0.1 else f"{slowest * 3600:.1f} s"
        levels = ", ".join(d.deadline_levels) or "-"
        out.append(f"  uploads: slowest {shown} after recording; deadline levels seen: {levels}")
    return out


def gap_line(g: GapFact) -> str:
    """One gap in a line: its cause, tracks, start, length and how it was explained."""
    length = "never resumed" if g.length is None else f"{g.length:.1f} s"
    on = f" on {','.join(g.tracks)}" if g.tracks else ""
    how = g.explanation or "UNEXPLAINED"
    if g.where == "store":
        how += " (at the agency)"
    return f"{g.cause}{on} at {g.start:.1f} s ({length}): {how}"


def _t(t: float | None) -> str:
    return "?" if t is None else f"{t:.1f} s"

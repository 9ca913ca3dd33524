"""Whether a scenario's expectations hold: facts in (:mod:`simulator.scenario_facts`),
one verdict out per expectation (:mod:`simulator.scenario_expect`), saying why with
device ids and scenario times. Pure.

Example::

    for outcome in check_all(scenario.expect, facts):
        print(outcome.ok, outcome.name, outcome.detail)
"""

from __future__ import annotations

from collections.abc import Iterable

from simulator.scenario_expect import (
    AllTracksPresent,
    ChainVerifies,
    Continuous,
    DeadlineSeen,
    Expectation,
    FootageLost,
    GapExplained,
    Markers,
    NoSilentGap,
    Sessions,
    UploadedWithin,
)
from simulator.scenario_facts import DeviceFacts, GapFact, Outcome, RunFacts, level_rank
from simulator.scenario_model import matching


def check_all(expectations: Iterable[Expectation], facts: RunFacts) -> list[Outcome]:
    return [check(e, facts, i) for i, e in enumerate(expectations)]


def check(e: Expectation, facts: RunFacts, index: int = 0) -> Outcome:
    """Judge one expectation; the detail says why, with device ids and scenario times."""
    devices = [facts.devices[i] for i in matching(sorted(facts.devices), e.devices)]
    name = f"{e.check} ({e.devices})"
    if not devices:
        return Outcome(index, name, False, f"no device matches {e.devices!r}")
    if isinstance(e, ChainVerifies):
        ok, detail = _chain(devices, e.strict)
    elif isinstance(e, GapExplained):
        name = f"{e.check} ({e.devices}, {e.how}{', ' + e.cause if e.cause else ''})"
        ok, detail = _gaps_explained(devices, e)
    elif isinstance(e, UploadedWithin):
        name = f"{e.check} ({e.devices}, {e.hours:g} h)"
        ok, detail = _uploaded(devices, e.hours)
    elif isinstance(e, FootageLost):
        name = f"{e.check} ({e.devices}, {e.seconds:g} s)"
        ok, detail = _footage(devices, e.seconds)
    elif isinstance(e, AllTracksPresent):
        ok, detail = _tracks(devices)
    elif isinstance(e, NoSilentGap):
        ok, detail = _silent(devices)
    elif isinstance(e, Continuous):
        ok, detail = _continuous(devices)
    elif isinstance(e, Sessions):
        name = f"{e.check} ({e.devices}, {e.count}{' closed' if e.closed else ''})"
        ok, detail = _sessions(devices, e.count, e.closed)
    elif isinstance(e, DeadlineSeen):
        name = f"{e.check} ({e.devices}, {e.level})"
        ok, detail = _deadline(devices, e.level)
    elif isinstance(e, Markers):
        name = f"{e.check} ({e.devices}, {e.type.value} x{e.at_least})"
        ok, detail = _markers(devices, e.type.value, e.at_least)
    else:  # pragma: no cover - the model admits no other
        raise AssertionError(e)
    return Outcome(index, name, ok, detail)


def _chain(devices: list[DeviceFacts], strict: bool) -> tuple[bool, str]:
    """What ``unbroken verify`` finds; ``strict``: an unexplained gap fails too — judged
    with statements added at the agency, which the device's own chain does not hold."""
    bad = []
    for d in devices:
        for p in d.problems:
            if p["code"] != "unexplained_gap":
                bad.append(f"{d.id}: {p['code']} at {p['where']}: {p['message']}")
        if strict:
            bad += [f"{d.id}: {_gap_text(g)}: UNEXPLAINED" for g in d.gaps if not g.explanation]
    if bad:
        return False, _few(bad)
    entries = sum(len(d.segments) for d in devices)
    return True, f"{len(devices)} device(s), {entries} segments sealed, every check passes"


def gap_matches(g: GapFact, how: str) -> bool:
    if how == "any":
        return g.explanation is not None
    return g.explanation == how


def _gaps_explained(devices: list[DeviceFacts], e: GapExplained) -> tuple[bool, str]:
    gaps = [(d.id, g) for d in devices for g in d.gaps if e.cause in (None, g.cause)]
    what = f"{e.cause} gap" if e.cause else "gap"
    if len(gaps) < e.at_least:
        return False, f"expected at least {e.at_least} {what}(s), found {len(gaps)}"
    bad = [
        f"{dev}: {_gap_text(g)}: {g.explanation or 'UNEXPLAINED'}"
        for dev, g in gaps
        if not gap_matches(g, e.how)
    ]
    if bad:
        return False, _few(bad)
    if not gaps:
        return True, f"no {what} to explain"
    return True, "; ".join(
        f"{dev}: {_gap_text(g)}: {g.explanation}{' (at the agency)' if g.where == 'store' else ''}"
        for dev, g in gaps[:4]
    ) + (f"; and {len(gaps) - 4} more" if len(gaps) > 4 else "")


def _gap_text(g: GapFact) -> str:
    length = "never resumed" if g.length is None else f"{g.length:.1f} s"
    on = f" on {','.join(g.tracks)}" if g.tracks else ""
    return f"{g.cause}{on} at {g.start:.1f} s ({length})"


def _uploaded(devices: list[DeviceFacts], hours: float) -> tuple[bool, str]:
    segs = [(d.id, s) for d in devices for s in d.segments]
    if not segs:
        return False, "nothing was recorded: no segment to upload"
    missing = [
        f"{dev}: {s.track} segment {s.index} of {s.session[:8]}"
        for dev, s in segs
        if s.stored_at is None
    ]
    late = [
        f"{dev}: {s.track} segment {s.index} stored {s.upload_hours:.1f} h after recording"
        for dev, s in segs
        if s.upload_hours is not None and s.upload_hours > hours
    ]
    if missing or late:
        head = f"{len(missing)} of {len(segs)} segments without a receipt" if missing else ""
        return False, _few(([head] if head else []) + missing[:5] + late)
    worst = max(s.upload_hours or 0.0 for _, s in segs)
    return True, (
        f"{len(segs)} segments on {len(devices)} device(s) receipted; the slowest "
        f"{_hours(worst)} after its recording ended"
    )


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 0.1 else f"{h * 3600:.1f} s"


def _footage(devices: list[DeviceFacts], seconds: float) -> tuple[bool, str]:
    cuts = [(d.id, c) for d in devices for c in d.cuts if c.session is not None]
    problems = [f"{d.id}: {p}" for d in devices for p in d.cut_problems]
    if problems:
        return False, _few(problems)
    if not cuts:
        return False, "no power cut happened inside a session: nothing to judge"
    bad = [
        f"{dev}: cut at {c.t:.1f} s lost {c.lost:.2f} s"
        for dev, c in cuts
        if c.lost is None or c.lost > seconds
    ]
    if bad:
        return False, _few(bad)
    worst = max(c.lost or 0.0 for _, c in cuts)
    return True, f"{len(cuts)} power cut(s) inside sessions; the worst lost {worst:.2f} s"


def _tracks(devices: list[DeviceFacts]) -> tuple[bool, str]:
    bad, n = [], 0
    for d in devices:
        for s in d.sessions:
            n += 1
            counts = {t: s.tracks.get(t, 0) for t in d.tracks}
            absent = [t for t, c in counts.items() if c == 0]
            if absent:
                bad.append(f"{d.id}: session {s.id[:8]} has no segment on {', '.join(absent)}")
            elif len(set(counts.values())) > 1:
                shown = ", ".join(f"{t} {c}" for t, c in counts.items())
                bad.append(f"{d.id}: session {s.id[:8]} tracks differ: {shown}")
    if not n:
        return False, "no session was recorded"
    if bad:
        return False, _few(bad)
    tracks = sorted({t for d in devices for t in d.tracks})
    return True, f"{n} session(s), each with segments on every track ({', '.join(tracks)})"


def _silent(devices: list[DeviceFacts]) -> tuple[bool, str]:
    bad = [
        f"{d.id}: {p['where']}: {p['message']}"
        for d in devices
        for p in d.problems
        if p["code"] == "silent_gap"
    ]
    if bad:
        return False, _few(bad)
    gaps = sum(len(d.gaps) for d in devices)
    sessions = sum(len(d.sessions) for d in devices)
    if not sessions:
        return False, "no session was recorded"
    return True, f"{sessions} session(s); every one of {gaps} gap(s) logged with its cause"


def _continuous(devices: list[DeviceFacts]) -> tuple[bool, str]:
    sessions = [(d.id, s) for d in devices for s in d.sessions]
    if not sessions:
        return False, "no session was recorded"
    bad = [f"{d.id}: {_gap_text(g)}" for d in devices for g in d.gaps]
    if bad:
        return False, _few(bad)
    return True, f"{len(sessions)} session(s) without a gap"


def _sessions(devices: list[DeviceFacts], count: int, closed: bool) -> tuple[bool, str]:
    bad = []
    for d in devices:
        if len(d.sessions) != count:
            bad.append(f"{d.id}: {len(d.sessions)} session(s), expected {count}")
        still_open = [s.id[:8] for s in d.sessions if s.closed is None]
        if closed and still_open:
            bad.append(f"{d.id}: session(s) {', '.join(still_open)} never closed")
    if bad:
        return False, _few(bad)
    return True, f"{len(devices)} device(s) with {count} session(s) each" + (
        ", all closed" if closed else ""
    )


def _deadline(devices: list[DeviceFacts], level: str) -> tuple[bool, str]:
    bad, seen = [], []
    for d in devices:
        worst = max((s.deadline for s in d.samples), key=level_rank, default="ok")
        seen.append(f"{d.id}: {worst}")
        if level_rank(worst) < level_rank(level):
            bad.append(f"{d.id}: the deadline level reached only {worst!r}, not {level!r}")
    if bad:
        return False, _few(bad)
    return True, "; ".join(seen[:4]) + (f"; and {len(seen) - 4} more" if len(seen) > 4 else "")


def _markers(devices: list[DeviceFacts], kind: str, at_least: int) -> tuple[bool, str]:
    bad, n = [], 0
    for d in devices:
        k = sum(m.type == kind for m in d.markers)
        n += k
        if k < at_least:
            bad.append(f"{d.id}: {k} {kind} marker(s), expected at least {at_least}")
    if bad:
        return False, _few(bad)
    return True, f"{n} {kind} marker(s) on {len(devices)} device(s)"


def _few(items: list[str], limit: int = 6) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")

"""A scenario run's report page: self-contained HTML with the verdict, each expectation, and
per device its timeline picture (:mod:`simulator.timeline_picture`), gaps, problems and the
timeline actions it was given.

Example::

    write_html(scenario, facts, outcomes, Path("out/report.html"))
"""

from __future__ import annotations

import html
from pathlib import Path

from simulator.run_summary import device_text, gap_line
from simulator.scenario_facts import DeviceFacts, Outcome, RunFacts
from simulator.scenario_model import Scenario
from simulator.timeline_picture import COLOURS, device_svg, time_range


def write_html(scenario: Scenario, facts: RunFacts, outcomes: list[Outcome], path: Path) -> None:
    path.write_text(render_html(scenario, facts, outcomes), encoding="utf-8")


def render_html(scenario: Scenario, facts: RunFacts, outcomes: list[Outcome]) -> str:
    """The whole page, self-contained: its pictures are inline SVG and its style inline."""
    e = html.escape
    failed = [o for o in outcomes if not o.ok]
    verdict = (
        f'<p class="verdict fail">FAIL: {len(failed)} of {len(outcomes)} expectations failed</p>'
        if failed
        else f'<p class="verdict pass">PASS: all {len(outcomes)} expectations met</p>'
    )
    rows = "".join(
        f'<tr class="{"pass" if o.ok else "fail"}"><td>{"PASS" if o.ok else "FAIL"}</td>'
        f"<td>{e(o.name)}</td><td>{e(o.detail)}</td></tr>"
        for o in outcomes
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in facts.notes)
    t_lo, t_hi = time_range(facts)
    devices = "".join(_device_html(d, facts, t_lo, t_hi) for d in facts.devices.values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Scenario {e(scenario.name)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #212121; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 8px; text-align: left;
  vertical-align: top; border-bottom: 1px solid #eee; }}
tr.fail td:first-child, .verdict.fail {{ color: #c62828; font-weight: bold; }}
tr.pass td:first-child, .verdict.pass {{ color: #2e7d32; font-weight: bold; }}
.legend span {{ display: inline-block; margin-right: 1em; }}
.legend i {{ display: inline-block; width: 14px; height: 10px; margin-right: 4px; }}
.small {{ color: #616161; font-size: 12px; }}
svg {{ display: block; margin: 0.5em 0; }}
</style></head><body>
<h1>Scenario {e(scenario.name)}</h1>
<p>{e(scenario.description)}</p>
<p class="small">{e(facts.mode)}; {len(facts.devices)} device(s); timeline {facts.duration:g} s,
ended at {facts.ended:.1f} s; the run took {facts.wall_seconds:.1f} s of wall time.</p>
{verdict}
<table><tr><th></th><th>expectation</th><th>why</th></tr>{rows}</table>
{f"<ul>{notes}</ul>" if notes else ""}
{_legend()}
{devices}
</body></html>
"""


def _legend() -> str:
    items = [
        ("segment", "segment (receipted)"),
        ("prebuffer", "pre-event segment"),
        ("recovered", "recovered after a power cut"),
        ("voice", "gap explained by voice"),
        ("written", "gap: written statement"),
        ("unexplained", "gap unexplained"),
        ("cut", "power cut"),
        ("recording", "recording"),
        ("offline", "network down (under the state)"),
        ("no_fix", "no GNSS fix"),
        ("receipted", "segments receipted"),
        ("sealed", "segments sealed"),
    ]
    spans = "".join(
        f'<span><i style="background:{COLOURS[k]}"></i>{html.escape(v)}</span>' for k, v in items
    )
    return (
        f'<p class="legend">{spans}<span>hatched: no receipt yet; dashed gap: '
        "never resumed</span></p>"
    )


def _device_html(d: DeviceFacts, facts: RunFacts, t_lo: float, t_hi: float) -> str:
    e = html.escape
    actions = [a for a in facts.actions if a.device == d.id]
    items = "".join(
        f"<li>{a.t:.1f} s: {e(a.do)} {'' if a.ok else '<b>refused</b>'} "
        f'<span class="small">{e(a.detail)}</span></li>'
        for a in actions
    )
    gaps = "".join(f"<li>{e(gap_line(g))}</li>" for g in d.gaps)
    problems = "".join(
        f"<li>{e(p['code'])} at {e(p['where'])}: {e(p['message'])}</li>" for p in d.problems
    )
    summary = e(device_text(d)[0])
    return f"""<h2 id="{e(d.id)}">{e(d.id)}</h2>
<p class="small">{summary}</p>
{device_svg(d, facts, t_lo, t_hi)}
{f"<p>Gaps:</p><ul>{gaps}</ul>" if gaps else ""}
{f"<p>Problems:</p><ul>{problems}</ul>" if problems else ""}
{_details(f"Timeline actions ({len(actions)})", items) if actions else ""}
"""


def _details(summary: str, items: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary><ul>{items}</ul></details>"

"""The scenario report's timeline shows where the GNSS fix was lost and regained, as the
event log does (facts in, SVG and text out: no devices run)."""

from __future__ import annotations

import xml.dom.minidom

from simulator.run_summary import fix_losses, format_text
from simulator.scenario_facts import DeviceFacts, RunFacts, SessionFact
from simulator.scenario_model import Scenario
from simulator.timeline_picture import COLOURS
from simulator.timeline_report import render_html


def _scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "t",
            "duration": 10,
            "devices": [{"id": "bwc-1"}],
            "expect": [{"check": "continuous"}],
        }
    )


def _facts(events: list[tuple[float, str]]) -> RunFacts:
    d = DeviceFacts("bwc-1", "body", ["main"])
    d.sessions = [SessionFact("s1", 1.0, 20.0, tracks={"main": 0})]
    d.events = events
    f = RunFacts("t", "fast", 30, 31, 0.0)
    f.devices = {"bwc-1": d}
    return f


def test_fix_losses_pair_lost_with_regained() -> None:
    d = _facts([(12.0, "gnss_regained"), (4.0, "gnss_lost"), (20.0, "gnss_lost")]).devices["bwc-1"]
    assert fix_losses(d, 30.0) == [(4.0, 12.0), (20.0, None)]
    assert fix_losses(d, 10.0) == [(4.0, 12.0)]
    assert fix_losses(DeviceFacts("x", "body", ["main"]), 30.0) == []


def test_the_timeline_draws_fix_loss_and_the_text_names_it() -> None:
    scenario = _scenario()
    facts = _facts([(4.0, "gnss_lost"), (12.0, "gnss_regained"), (20.0, "storage_warning")])
    page = render_html(scenario, facts, [])
    svg = page[page.index("<svg") : page.index("</svg>") + 6]
    rects = xml.dom.minidom.parseString(svg).documentElement.getElementsByTagName("rect")
    lost = [r for r in rects if r.getAttribute("class") == "no-fix"]
    assert len(lost) == 1 and lost[0].getAttribute("fill") == COLOURS["no_fix"]
    assert "GNSS fix lost at 4.0 s, regained at 12.0 s" in lost[0].toxml()
    assert "no GNSS fix" in page  # in the legend
    text = format_text(scenario, facts, [])
    assert "GNSS fix lost at 4.0 s, regained at 12.0 s" in text

"""``unbroken sim run``: load a scenario, play it (:class:`simulator.scenario.Runner`),
judge its expectations and write the report; exit 1 if any failed, 2 if it could not run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from simulator.control_commands import ControlError
from simulator.scenario import Runner
from simulator.scenario_checks import check_all
from simulator.scenario_facts import Outcome, RunFacts
from simulator.scenario_model import ScenarioError, load_scenario, needs_real_time


def run_scenario(
    path: Path,
    report: Path | None = None,
    fast: bool = False,
    workdir: Path | None = None,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> tuple[RunFacts, list[Outcome]]:
    """Load, run, judge and report one scenario (ScenarioError: it cannot be run)."""
    from simulator.run_summary import format_text
    from simulator.timeline_report import write_html

    scenario = load_scenario(path)
    if fast and (why := needs_real_time(scenario)):
        raise ScenarioError(
            f"{path}: cannot run --fast (no broker, store or processes):\n  " + "\n  ".join(why)
        )
    temporary = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"unbroken-sim-{scenario.name}-"))
    elif workdir.exists() and any(workdir.iterdir()):
        raise ScenarioError(f"--workdir {workdir}: not empty (a run needs a fresh site)")
    workdir.mkdir(parents=True, exist_ok=True)
    facts = Runner(scenario, workdir, fast, out).run()
    outcomes = check_all(scenario.expect, facts)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_html(scenario, facts, outcomes, report / "report.html")
        (report / "report.json").write_text(
            json.dumps(
                {"facts": asdict(facts), "outcomes": [asdict(o) for o in outcomes]},
                ensure_ascii=False,
                indent=1,
                default=str,
            )
        )
        if (workdir / "store-report.txt").exists():
            shutil.copy(workdir / "store-report.txt", report / "store-report.txt")
    out(format_text(scenario, facts, outcomes, report / "report.html" if report else None))
    failed = any(not o.ok for o in outcomes)
    if temporary and not keep and not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    elif failed or keep:
        out(f"evidence, logs and the store are kept in {workdir}")
    return facts, outcomes


def _say(line: str) -> None:
    print(line, flush=True)  # interleaved with the devices' warnings on stderr


def cmd_run(args: argparse.Namespace) -> int:
    try:
        _, outcomes = run_scenario(
            args.scenario,
            args.report,
            fast=args.fast,
            workdir=args.workdir,
            keep=args.keep,
            out=_say,
        )
    except (ScenarioError, ControlError) as e:
        print(f"unbroken: error: {e}", file=sys.stderr)
        return 2
    return 1 if any(not o.ok for o in outcomes) else 0

"""``unbroken sim run`` and ``unbroken sim panel``: their arguments, and the modules that
carry them out imported only when they run (the device agent's start-up, which a power
cut makes part of the recording gap, must not pay for the simulator's imports).

Example::

    unbroken sim run simulator/scenarios/routine-stop.toml --report out/routine
    unbroken sim panel --devices 2 --rooms 1
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any


def _lazy(module: str, function: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), function)(args))

    return run


def add_sim_parsers(sim_subparsers: Any) -> None:
    """Register ``run`` and ``panel`` under the ``sim`` subcommands."""
    r = sim_subparsers.add_parser(
        "run",
        help="play a scenario (fleet, timeline, expectations) and check it; exit 1 if any "
        "expectation fails",
    )
    r.add_argument("scenario", type=Path, help="the scenario file (TOML)")
    r.add_argument("--report", type=Path, metavar="DIR", help="write report.html and .json here")
    r.add_argument(
        "--fast",
        action="store_true",
        help="in-process devices on simulated time (no broker, store or processes)",
    )
    r.add_argument("--workdir", type=Path, help="where the site and devices live (new or empty)")
    r.add_argument("--keep", action="store_true", help="keep the workdir even when all passes")
    r.set_defaults(func=_lazy("simulator.scenario_cli", "cmd_run"))

    p = sim_subparsers.add_parser(
        "panel", help="a web page for a simulated fleet: buttons, LEDs, preview, log, sync"
    )
    p.add_argument("--devices", type=int, default=2, help="how many body recorders (default 2)")
    p.add_argument(
        "--rooms",
        type=int,
        default=1,
        help="how many interview rooms, numbered from 101 (default 1): a room controller "
        "with its panel, and with sync the case system",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where devices (and the site) live; new or empty (default: a new temporary directory)",
    )
    p.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a local broker and store and sync every device (default: if Mosquitto "
        "is installed)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="device.toml for every device (a room's adds the default [room] if it has none)",
    )
    p.add_argument(
        "--explain-mode", choices=["auto", "button"], help="override continuity.explain_mode"
    )
    p.set_defaults(func=_lazy("simulator.web", "cmd_panel"))

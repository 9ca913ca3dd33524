"""``unbroken store run|report``: the agency store's commands."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path

from store.config import load_store_config
from store.db import Database
from store.report import build_report, format_report
from store.worker import start_worker


def cmd_run(args: argparse.Namespace) -> int:
    config = load_store_config(args.config)
    worker = start_worker(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not worker.ready.wait(15):
        print(
            f"store {config.name}: waiting for the broker at "
            f"{config.broker.host}:{config.broker.port}",
            flush=True,
        )
    else:
        print(f"store {config.name}: subscribed, group {config.group}", flush=True)
    stop.wait()
    worker.stop()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    config = load_store_config(args.config)
    db = Database.connect(config.database)
    try:
        report = build_report(db, time.time())
    finally:
        db.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def add_store_parser(sub: argparse._SubParsersAction) -> None:
    store = sub.add_parser("store", help="the agency store").add_subparsers(
        dest="store_command", required=True
    )
    r = store.add_parser("run", help="receive, verify and keep what devices upload")
    r.add_argument("--config", type=Path, required=True, help="store.toml")
    r.set_defaults(func=cmd_run)
    p = store.add_parser("report", help="per device and session: synced, late, gaps")
    p.add_argument("--config", type=Path, required=True, help="store.toml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

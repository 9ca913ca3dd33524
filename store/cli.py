"""``unbroken store run|report|explain|send|lay-out``: the agency store's commands.

(``unbroken store export`` is registered by :mod:`unbroken.cli`: it verifies and muxes
with the device side's tools, which the store does not import.)"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
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
    if worker.problem:
        print(f"store {config.name}: {worker.problem}; retrying", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 15
    while not worker.ready.wait(0.1) and not stop.is_set() and time.monotonic() < deadline:
        pass  # a stop asked for meanwhile is not kept waiting
    if not worker.ready.is_set():
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
        report = build_report(db, time.time(), config.limits.skew_seconds)
    finally:
        db.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from common.cli import CliError
    from common.statements import PinCredentials, StatementError, pin_attestations
    from provisioning.agency import Agency
    from store.statements import add_statement

    config = load_store_config(args.config)
    agency = Agency(config.agency)
    try:
        attestations = pin_attestations(args.attest)
    except StatementError as e:
        raise CliError(str(e)) from None
    db = Database.connect(config.database)
    try:
        creds = PinCredentials.load(args.credentials, agency.verify_key)
        add_statement(
            db,
            agency.signing_key,
            args.device,
            args.gap,
            args.reason,
            attestations,
            creds,
            time.time(),
        )
    except StatementError as e:
        raise CliError(str(e)) from None
    finally:
        db.close()
    print(f"written statement for gap {args.gap} of {args.device}, signed by the agency")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from common.cli import CliError
    from evidence.names import ProvisionError
    from store.commands import SignedError, send_command

    config = load_store_config(args.config)
    try:
        data = args.command.read_bytes()
    except OSError as e:
        raise CliError(f"{args.command}: {e.strerror}") from None
    try:
        cmd = send_command(config, data, time.time())
    except (SignedError, ProvisionError, OSError) as e:
        raise CliError(f"{args.command}: {e}") from None
    print(f"sent {cmd.command} to {cmd.device} (nonce {cmd.nonce})")
    return 0


def cmd_lay_out(args: argparse.Namespace) -> int:
    from common.cli import CliError
    from store.db import Database
    from store.evidence_view import ViewError, lay_out_device, log_access

    config = load_store_config(args.config)
    try:
        db = Database.connect(config.database)
        try:
            where = f"laid out, still encrypted, in {args.out.resolve()}"
            log_access(db, args.who, "lay-out", args.device, args.session, where, time.time())
        finally:
            db.close()
        pin = lay_out_device(
            config, args.device, args.out, [args.session] if args.session else None
        )
    except ViewError as e:
        raise CliError(str(e)) from None
    print(f"evidence of {args.device} laid out in {args.out}")
    print(f"verify with: unbroken verify {args.out} --pubkey {pin}")
    return 0


def add_store_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``store`` commands; returns their subparsers, for commands registered above."""
    store = sub.add_parser("store", help="the agency store").add_subparsers(
        dest="store_command", required=True
    )
    r = store.add_parser("run", help="receive, verify and keep what devices upload")
    r.add_argument("--config", type=Path, required=True, help="store.toml")
    r.set_defaults(func=cmd_run)
    p = store.add_parser("report", help="per device and session: synced, late, gaps")
    p.add_argument("--config", type=Path, required=True, help="store.toml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_report)
    x = store.add_parser("explain", help="a written statement for a gap, at the agency")
    x.add_argument("--config", type=Path, required=True, help="store.toml")
    x.add_argument("--device", required=True)
    x.add_argument("--gap", required=True, help="the interruption id")
    x.add_argument("--reason", required=True)
    x.add_argument("--attest", action="append", default=[], metavar="BADGE:PIN")
    x.add_argument("--credentials", type=Path, required=True, help="agency officer list")
    x.set_defaults(func=cmd_explain)
    c = store.add_parser("send", help="deliver an agency-signed command file to its device")
    c.add_argument("--config", type=Path, required=True, help="store.toml")
    c.add_argument("command", type=Path, help="signed command (provision assign/open-session)")
    c.set_defaults(func=cmd_send)
    v = store.add_parser(
        "lay-out", help="a device's evidence as the store holds it, as an evidence directory"
    )
    v.add_argument("--config", type=Path, required=True, help="store.toml")
    v.add_argument("--device", required=True)
    v.add_argument("--session", help="lay out this session's media only (default: all)")
    v.add_argument("--out", type=Path, required=True, help="the directory to write (new)")
    v.add_argument(
        "--who",
        default=getpass.getuser(),
        help="who takes the footage out, for the store's access log (default: this user)",
    )
    v.set_defaults(func=cmd_lay_out)
    return store

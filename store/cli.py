"""``unbroken store run|report|explain|send|commands|lay-out|migrate``: the agency store's
commands.

(``unbroken store export`` is registered by :mod:`unbroken.cli`; it reads the store's
holdings as a :class:`store.archive.StoreArchive` and exports with
:mod:`common.archive.export`, as ``unbroken export`` does a device's directory.)"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.cli import CliError, add_pin_options, add_progress_options
from store.config import load_store_config
from store.db import Database
from store.report import build_report, format_report
from store.schema import SchemaError
from store.worker import start_worker

Command = Callable[[argparse.Namespace], int]


def schema_told(command: Command) -> Command:
    """A command opening the store's database: one it cannot bring to the schema (not the
    store's, from a newer version) is said as an error, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except SchemaError as e:
            raise CliError(str(e)) from None

    return run


@schema_told
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
    while not stop.wait(1):
        if worker.halted.is_set():  # another client took its session: never fight over it
            print(f"store {config.name}: {worker.problem}", file=sys.stderr, flush=True)
            worker.stop()
            return 1
    worker.stop()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from store.db import DatabaseMissing
    from store.report import known_devices
    from store.report_view import SinceError, needing_attention, parse_since, since, summary

    config = load_store_config(args.config)
    now = time.time()
    try:
        t = parse_since(args.since, now) if args.since else None
        db = Database.open_existing(config.database)  # a report only reads
    except (SinceError, DatabaseMissing) as e:
        raise CliError(str(e)) from None
    try:
        if args.device and args.device not in (devices := known_devices(db)):
            raise CliError(
                f"the store has heard nothing of device {args.device!r}; "
                f"it knows {', '.join(devices) or 'no device yet'}"
            )
        report = build_report(db, now, config.limits.skew_seconds, device=args.device)
    finally:
        db.close()
    shown = []
    if t is not None:
        report = since(report, t)
        shown.append(f"sessions since {args.since}")
    if args.problems:
        report = needing_attention(report)
        shown.append("only what needs attention")
    report["shown"] = ", ".join(shown) or None
    report["crl"] = _crl(config.agency)
    report["summary"] = summary(report)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def _crl(agency: Path) -> dict[str, Any]:
    """When the broker's CRL (the agency's, which the renewal puts into the broker) runs
    out: past it, the broker refuses every device and store."""
    from evidence.names import ProvisionError
    from provisioning.crl_probe import crl_expiry

    try:
        return {"file": str(agency / "crl.pem"), "valid_until": crl_expiry(agency / "crl.pem")}
    except ProvisionError as e:
        return {"file": str(agency / "crl.pem"), "unreadable": str(e)}


@schema_told
def cmd_explain(args: argparse.Namespace) -> int:
    from common.cli import officers_pins
    from common.statements import PinCredentials, StatementError, pin_attestations
    from provisioning.agency import Agency
    from store.statements import add_statement

    config = load_store_config(args.config)
    agency = Agency(config.agency)
    attestations = pin_attestations(officers_pins("--attest", args.attest, args.pins))
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


@schema_told
def cmd_send(args: argparse.Namespace) -> int:
    from evidence.names import ProvisionError
    from store.commands import SignedError, send_command

    config = load_store_config(args.config)
    try:
        data = args.command.read_bytes()
    except OSError as e:
        raise CliError(f"{args.command}: {e.strerror}") from None
    if args.wait < 0:
        raise CliError(f"--wait {args.wait}: a number of seconds, 0 or more")
    try:
        result = send_command(config, data, time.time(), wait=args.wait)
    except (SignedError, ProvisionError) as e:
        raise CliError(f"{args.command}: {e}") from None
    print(result.text)
    return result.status


@schema_told
def cmd_commands(args: argparse.Namespace) -> int:
    from evidence.names import iso
    from store.mailbox import Mailbox

    config = load_store_config(args.config)
    db = Database.connect(config.database)
    try:
        kept = Mailbox(db).listing(time.time(), args.device)
    finally:
        db.close()
    if not kept:
        print("no commands sent" + (f" to {args.device}" if args.device else ""))
    for c in kept:
        case = f" case {c.case}" if c.case else ""
        why = (f" ({c.reason})" if c.state == "applied" else f": {c.reason}") if c.reason else ""
        print(
            f"{iso(c.queued)}  {c.device}  {c.command}{case}  {c.state}{why}"
            f"  (nonce {c.nonce[:8]}, delivered {c.sends}x, expires {iso(c.expires)})"
        )
    return 0


@schema_told
def cmd_lay_out(args: argparse.Namespace) -> int:
    from common.cli import progress_wanted
    from common.progress import progress_shown
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
        sessions = [args.session] if args.session else None
        with progress_shown(progress_wanted(args)) as progress:
            pin = lay_out_device(config, args.device, args.out, sessions, progress=progress)
    except ViewError as e:
        raise CliError(str(e)) from None
    print(f"evidence of {args.device} laid out in {args.out}")
    print(f"verify with: unbroken verify {args.out} --pubkey {pin}")
    return 0


@schema_told
def cmd_migrate(args: argparse.Namespace) -> int:
    from store.db import without_password
    from store.schema import known_migrations

    config = load_store_config(args.config)
    db = Database.connect(config.database)
    db.close()
    where = without_password(config.database)
    if db.migrated:
        print(f"{where}: applied {', '.join(db.migrated)}")
    else:
        print(f"{where}: already current (at {known_migrations()[-1]})")
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
    p.add_argument("--device", help="this device only")
    p.add_argument(
        "--problems",
        action="store_true",
        help="only what needs attention: chain gaps, problems and forks, overdue or late "
        "segments, unexplained gaps, footage in the clear, what did not read, interviews "
        "not recorded",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="sessions opened since WHEN: an ISO date or date and time (UTC unless it "
        "names a zone), or a span back from now: 90m, 24h, 7d",
    )
    p.set_defaults(func=cmd_report)
    x = store.add_parser("explain", help="a written statement for a gap, at the agency")
    x.add_argument("--config", type=Path, required=True, help="store.toml")
    x.add_argument("--device", required=True)
    x.add_argument("--gap", required=True, help="the interruption id")
    x.add_argument("--reason", required=True)
    add_pin_options(x, "--attest", "an officer attesting (repeatable); at least two")
    x.add_argument("--credentials", type=Path, required=True, help="agency officer list")
    x.set_defaults(func=cmd_explain)
    c = store.add_parser(
        "send",
        help="deliver an agency-signed command to its device and wait for its answer",
        description="Keeps the command until its device answers or it expires (a device "
        "offline now gets it when it connects), publishes it, and waits for the device's "
        "signed answer. Prints applied, refused: REASON, expired, or pending: WHY; exit "
        "status 0 applied, 1 refused or expired, 3 pending (still queued).",
    )
    c.add_argument("--config", type=Path, required=True, help="store.toml")
    c.add_argument("command", type=Path, help="signed command (provision assign/open-session)")
    c.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the device's answer (default 30; 0: do not wait)",
    )
    c.set_defaults(func=cmd_send)
    k = store.add_parser("commands", help="the commands sent to devices, and their answers")
    k.add_argument("--config", type=Path, required=True, help="store.toml")
    k.add_argument("--device", help="only this device's")
    k.set_defaults(func=cmd_commands)
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
    add_progress_options(v)
    v.set_defaults(func=cmd_lay_out)
    m = store.add_parser(
        "migrate",
        help="bring the store's database to this version's schema, and say what was applied",
        description="Applies the store's migrations its database lacks (a database made "
        "before migrations is adopted, every row kept). The store does it too when it "
        "starts; a report reads a database only once it is current.",
    )
    m.add_argument("--config", type=Path, required=True, help="store.toml")
    m.set_defaults(func=cmd_migrate)
    return store

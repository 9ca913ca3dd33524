"""The ``unbroken`` command: one CLI, with a subcommand for each user.

- ``unbroken agent run|explain|keygen|install|apply|rotate-key|status`` (the device)
- ``unbroken provision init-agency|enroll|assign|revoke|broker-config ...`` (the admin)
- ``unbroken store run|report|explain|send|lay-out|export --config store.toml`` (the agency)
- ``unbroken sim session --seconds N --data DIR [--badge B]`` (testers)
- ``unbroken verify DIR [--pubkey FILE] [--evidence-key FILE] [--json] [--strict]`` (anyone)
- ``unbroken export DIR [--session ID] --out DIR [--evidence-key FILE] [--accept-problems]``

What a user waits for (verify, export, store export, store lay-out) shows its progress on
stderr when that is a terminal; ``--progress`` shows it anyway, ``--quiet`` never. PINs
are never arguments: ``--attest BADGE`` asks for each, or ``--pins FILE`` (mode 0600)
holds them.
- ``unbroken demo [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.at_rest import EvidenceKeyError
from agent.config import load_config
from agent.device_cli import add_agent_commands
from agent.device_lock import RecorderBusy
from agent.evidence_dir import EvidenceDirError, load_chain, read_evidence_key, verify_dir
from agent.session import SessionError
from agent.watermark import FontError
from common.cli import (
    CliError,
    add_pin_options,
    add_progress_options,
    plain_text,
    progress_wanted,
)
from common.files import ConfigError, unwritable_dir
from common.progress import Progress
from common.settings import Category
from evidence.names import ProvisionError
from evidence.verify_report import format_report
from simulator.cli import add_sim_parsers
from simulator.mosquitto import BrokerError


def _data_dir(path: Path) -> Path:
    if why := unwritable_dir(path):
        raise CliError(f"data directory {path} is not writable: {why}")
    return path


def _evidence_dir(path: Path, command: str) -> Path:
    """A file where an evidence directory is wanted is said as such, not "no such
    directory"."""
    if path.exists() and not path.is_dir():
        kind = "a symbolic link" if path.is_symlink() else "a file"
        raise CliError(
            f"{path} is {kind}, not a directory: {command} wants an evidence directory (a "
            "device's data directory, or one laid out by unbroken store lay-out), the one "
            "holding chain/ and segments/"
        )
    return path


def cmd_verify(args: argparse.Namespace) -> int:
    from common.progress import progress_shown
    from evidence.encryption import key_id
    from evidence.verify import wrong_evidence_key
    from evidence.verify_report import Problem

    root = _evidence_dir(args.dir, "verify")
    wrong = None
    try:
        key = read_evidence_key(args.evidence_key) if args.evidence_key else None
        if key is not None and (
            wrong := wrong_evidence_key(load_chain(root), key_id(key.public_key))
        ):
            key = None  # the bytes, framing and counts are checked as without a key
        with progress_shown(progress_wanted(args)) as progress:
            if progress:
                progress("verifying", 0, None)
            report = verify_dir(
                root, args.pubkey, strict=args.strict, evidence_key=key, progress=progress
            )
    except EvidenceDirError as e:
        raise CliError(str(e)) from None
    if wrong:  # said once, not as every segment undecodable
        report.notices.insert(0, Problem("wrong_evidence_key", str(args.evidence_key), wrong))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report, str(args.dir)))
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from common.progress import progress_shown

    root = _evidence_dir(args.dir, "export")
    with progress_shown(progress_wanted(args)) as progress:
        return _export(root, args, progress, pubkey=args.pubkey, evidence_key=args.evidence_key)


def cmd_store_export(args: argparse.Namespace) -> int:
    """The store's holdings laid out beside the output (hard links to the blobs where the
    file system allows), exported as a device's directory would be, then removed."""
    import shutil
    import tempfile

    from common.progress import progress_shown
    from store.config import load_store_config
    from store.db import Database
    from store.evidence_view import ViewError, lay_out_device, log_access
    from store.statements import statements_of

    config = load_store_config(args.config)
    _writable(args.out)
    # The footage is encrypted to the agency's evidence key (R7): the store host need not
    # keep it, the user may bring it (--evidence-key, from removable media, say).
    key = args.evidence_key or config.agency / "private" / "evidence.key"
    no_key = (
        f"this host has no {key}, the agency's private evidence key: give it with "
        "--evidence-key FILE, or run unbroken store export where it is kept, or lay the "
        f"evidence out here, still encrypted (unbroken store lay-out --config {args.config} "
        f"--device {args.device} --out DIR) and export it where the key is (unbroken export "
        "DIR --evidence-key FILE)"
    )
    if args.evidence_key is not None and not key.is_file():
        raise CliError(f"{key}: evidence key file not found")
    view = Path(tempfile.mkdtemp(prefix=".unbroken-view-", dir=args.out))
    try:
        with progress_shown(progress_wanted(args)) as progress:
            sessions = [args.session] if args.session else None
            pin = lay_out_device(config, args.device, view, sessions, link=True, progress=progress)
            db = Database.connect(config.database)
            try:
                statements = statements_of(db, args.device)
                # Logged before the export runs (what is asked is who took footage out),
                # saying what could happen: without the key nothing is decrypted.
                detail = (
                    f"decrypted and exported to {args.out.resolve()}"
                    if key.is_file()
                    else f"export to {args.out.resolve()} asked for; no evidence key here"
                )
                log_access(db, args.who, "export", args.device, args.session, detail, time.time())
            finally:
                db.close()
            source = f"store {config.name} ({config.database}), device {args.device}"
            return _export(
                view,
                args,
                progress,
                pubkey=pin,
                source=source,
                statements=statements,
                evidence_key=key if key.is_file() else None,
                no_key=no_key,
            )
    except ViewError as e:
        raise CliError(str(e)) from None
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _writable(path: Path) -> Path:
    if why := unwritable_dir(path):
        raise CliError(f"output directory {path} is not writable: {why}")
    return path


def _export(
    root: Path,
    args: argparse.Namespace,
    progress: Progress | None,
    pubkey: Path | None,
    source: str | None = None,
    statements: dict[str, dict[str, object]] | None = None,
    evidence_key: Path | None = None,
    no_key: str | None = None,
) -> int:
    from unbroken.export import (
        NO_KEY,
        ExportError,
        ExportRefused,
        export_session,
        read_evidence_key,
    )

    try:
        key = read_evidence_key(evidence_key) if evidence_key else None
        result = export_session(
            root,
            args.session,
            args.out,
            pubkey=pubkey,
            accept_problems=args.accept_problems,
            force=args.force,
            progress=progress,
            software=_version(),
            source=source,
            agency_statements=statements,
            evidence_key=key,
            no_key=no_key or NO_KEY,
        )
    except ExportRefused as e:
        print(f"unbroken: error: {e}", file=sys.stderr)
        return 1
    except ExportError as e:
        raise CliError(str(e)) from None
    summary = result.summary.as_dict()
    if args.json:
        doc = {"files": [str(f) for f in result.files], "summary": summary}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(f"session {result.session} exported to {args.out}")
        for track, t in summary["tracks"].items():
            for f in t["files"] or [{"file": "NOT EXPORTED", "duration": 0.0}]:
                print(f"  {track}: {f['file']}  {f['duration']:.3f} s")
        print(f"  custody summary: {result.files[-2].name}, {result.files[-1].name}")
    verification = summary["verification"]
    if not verification["ok"]:
        print(
            f"WARNING: the evidence FAILED verification ({len(verification['problems'])} "
            "problem(s)); exported anyway because of --accept-problems, and the custody "
            "summary says so:",
            file=sys.stderr,
        )
        for p in verification["problems"]:
            print(f"  {p['code']}: {p['where']}: {p['message']}", file=sys.stderr)
    return 0


def cmd_sim_session(args: argparse.Namespace) -> int:
    from simulator.session import record_session

    config = load_config(args.config)
    summary = record_session(
        _data_dir(args.data),
        config,
        args.seconds,
        badges=args.badge or None,
        category=args.category,
        realtime=args.realtime,
    )
    print(summary)
    return 0


def cmd_agent_run(args: argparse.Namespace) -> int:
    from agent.config import device_config
    from agent.run import run_agent
    from device.hardware import BoardFactory, HardwareError

    data = _data_dir(args.data)
    try:
        config = device_config(data, args.config)
        if args.sim:
            from simulator.process import run_simulated_agent

            return run_simulated_agent(
                data,
                config,
                open_session=args.open,
                seconds=args.seconds,
                sync=not args.no_sync,
                control=args.control,
                clock_offset=args.clock_offset,
                offline=args.offline,
            )
        if args.control is not None or args.clock_offset or args.offline:
            raise HardwareError("--control, --clock-offset and --offline need --sim")
        board = BoardFactory(config)
        clock = board.clock()
        return run_agent(
            data,
            config,
            board.build(config, data, clock),
            clock,
            open_session=args.open,
            seconds=args.seconds,
            sync=not args.no_sync,
            gpio=config.hardware.gpio,
            pins=board.pins,
        )
    except (HardwareError, EvidenceKeyError) as e:
        raise CliError(str(e)) from None


def cmd_agent_explain(args: argparse.Namespace) -> int:
    from agent.evidence_dir import read_public_key
    from agent.statement import seal_statement
    from common.cli import badges_of, officers_pins
    from common.statements import PinCredentials, StatementError, pin_attestations
    from device.clock import SystemClock
    from evidence.seal import Moment

    badges_of("--attest", args.attest)  # a PIN in the arguments is refused before all else
    agency_pub = args.data / "provision" / "agency.pub"
    if not agency_pub.exists():
        raise CliError(
            f"{args.data}: this device is not provisioned (no agency key): a written statement "
            "needs the agency's officer list; install the device's bundle first "
            "(unbroken agent install), or add the statement at the agency (unbroken store explain)"
        )
    attestations = pin_attestations(officers_pins("--attest", args.attest, args.pins))
    try:
        agency = read_public_key(agency_pub)
        creds = PinCredentials.load(args.credentials or args.data / "officers.json", agency)
        clock = SystemClock()
        entry = seal_statement(
            args.data,
            args.gap,
            args.reason,
            attestations,
            creds,
            Moment(clock.wall(), clock.monotonic(), clock.synced()),
        )
    except (StatementError, EvidenceDirError) as e:
        raise CliError(str(e)) from None
    print(f"written statement sealed as entry {entry.seq} for gap {args.gap}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator.demo import DEVICE, run_demo

    if code := run_demo(args.workdir):
        return code
    # The case file (R8): the body recorder's session as the agency holds it, decrypted
    # with the agency's evidence key, verified, one MP4 and its custody summary.
    case = args.workdir / "case"
    print(f"\n== 10. Export the body recorder's session from the store into {case}")
    store = args.workdir / "store" / "worker-1" / "store.toml"
    export = ["store", "export", "--config", str(store), "--device", DEVICE, "--out", str(case)]
    code = main([*export, "--who", "demo"])
    for f in sorted(case.iterdir()):
        print(f"   {f.name}  {f.stat().st_size} bytes")
    return code


def _version() -> str:
    try:
        return importlib.metadata.version("unbroken")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# The admin's and the agency's commands load X.509, the store's database and the MQTT
# client: only built when asked for (or for --help), so a recording agent does not carry
# them (about 14 MB resident).
_ON_DEMAND = {
    "provision": "the agency's administration (provisioning/cli.py)",
    "store": "the agency store",
}


def _asked(argv: Sequence[str] | None) -> str | None:
    """The command named on the command line (None: none, so all of them)."""
    words = sys.argv[1:] if argv is None else argv
    return next((w for w in words if not w.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; the agency's commands only when ``argv`` names them."""
    asked = _asked(argv)
    p = argparse.ArgumentParser(prog="unbroken", description=plain_text(__doc__.splitlines()[0]))
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="check an evidence directory offline")
    v.add_argument("dir", type=Path)
    v.add_argument("--pubkey", type=Path, help="the device's public key to pin (hex file)")
    v.add_argument("--json", action="store_true", help="machine-readable report")
    v.add_argument("--strict", action="store_true", help="an unexplained gap is a failure")
    v.add_argument(
        "--evidence-key",
        type=Path,
        metavar="FILE",
        help="the agency's evidence key (hex): decrypt and decode every segment, and check "
        "what it decrypts to (without it, encrypted segments are checked by their framing)",
    )
    add_progress_options(v)
    v.set_defaults(func=cmd_verify)

    x = sub.add_parser(
        "export", help="verify, then write a session as one MP4 per track and its custody summary"
    )
    x.add_argument("dir", type=Path, help="the evidence directory")
    _export_arguments(x)
    x.add_argument("--pubkey", type=Path, help="the device's public key to pin (hex file)")
    x.add_argument(
        "--evidence-key",
        type=Path,
        metavar="FILE",
        help="the agency's evidence key the footage is encrypted to (AGENCY/private/evidence.key)",
    )
    x.set_defaults(func=cmd_export)

    sim = sub.add_parser("sim", help="drive simulated hardware").add_subparsers(
        dest="sim_command", required=True
    )
    s = sim.add_parser("session", help="record one simulated session and leave its evidence")
    s.add_argument("--seconds", type=float, required=True, help="session length")
    s.add_argument("--data", type=Path, required=True, help="evidence/data directory")
    s.add_argument("--badge", action="append", help="officer badge number (repeatable)")
    s.add_argument(
        "--category",
        choices=[c.value for c in Category],
        default=None,
        help="enforcement category (default: from config)",
    )
    s.add_argument("--config", type=Path, help="device.toml")
    s.add_argument("--realtime", action="store_true", help="pace frames in real time")
    s.set_defaults(func=cmd_sim_session)
    add_sim_parsers(sim)

    agent = sub.add_parser("agent", help="the device agent").add_subparsers(
        dest="agent_command", required=True
    )
    r = agent.add_parser("run", help="record (and sync, once provisioned) until stopped")
    r.add_argument("--data", type=Path, required=True, help="the device's data directory")
    r.add_argument("--config", type=Path, help="device.toml (default: DATA/device.toml)")
    r.add_argument("--sim", action="store_true", help="simulated hardware, real time")
    r.add_argument("--open", action="store_true", help="open a session at start")
    r.add_argument("--seconds", type=float, help="stop after this long")
    r.add_argument("--no-sync", action="store_true", help="do not upload, even if provisioned")
    r.add_argument(
        "--control",
        type=Path,
        metavar="SOCKET",
        help="--sim: a tester's control channel (JSON lines) on this Unix socket",
    )
    r.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="--sim: the device's wall clock is this far off (negative: behind)",
    )
    r.add_argument(
        "--offline",
        action="store_true",
        help="--sim --control: start with the network down",
    )
    r.set_defaults(func=cmd_agent_run)
    x = agent.add_parser("explain", help="add a written statement for a gap (R-Art 16)")
    x.add_argument("--data", type=Path, required=True)
    x.add_argument("--gap", required=True, help="the interruption id (from verify --json)")
    x.add_argument("--reason", required=True, help="why recording could not resume")
    add_pin_options(x, "--attest", "an officer attesting (repeatable); at least two")
    x.add_argument("--credentials", type=Path, help="agency-signed officer list")
    x.set_defaults(func=cmd_agent_explain)
    add_agent_commands(agent)  # keygen, install, apply, rotate-key, status
    if asked in (None, "provision"):
        from provisioning.cli import add_provision_parser

        add_provision_parser(sub)
    if asked in (None, "store"):
        _add_store_commands(sub)
    for name, what in _ON_DEMAND.items():
        if asked not in (None, name):
            sub.add_parser(name, help=what)

    d = sub.add_parser("demo", help="the whole job end to end on simulated hardware")
    d.add_argument(
        "--workdir",
        type=Path,
        default=Path("out/demo"),
        help="where the agency, broker, store and devices live: a new or empty directory, "
        "or one an earlier demo made (emptied and made again); any other is refused",
    )
    d.set_defaults(func=cmd_demo)
    return p


def _add_store_commands(sub: argparse._SubParsersAction) -> None:
    from store.cli import add_store_parser

    se = add_store_parser(sub).add_parser(
        "export", help="export a session as the store holds it (as unbroken export)"
    )
    se.add_argument("--config", type=Path, required=True, help="store.toml")
    se.add_argument("--device", required=True)
    _export_arguments(se)
    se.add_argument(
        "--evidence-key",
        type=Path,
        metavar="FILE",
        help="the agency's evidence key the footage is encrypted to "
        "(default: AGENCY/private/evidence.key of the store's configuration)",
    )
    se.add_argument(
        "--who",
        default=getpass.getuser(),
        help="who takes the footage out, for the store's access log (default: this user)",
    )
    se.set_defaults(func=cmd_store_export)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="the session (optional when there is only one)")
    p.add_argument("--out", type=Path, required=True, help="the directory to write into")
    p.add_argument(
        "--accept-problems",
        action="store_true",
        help="export evidence that fails verification; the summary says it failed and why",
    )
    p.add_argument("--force", action="store_true", help="replace output files already there")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_progress_options(p)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # `unbroken ... | head` closed the pipe: not an error of ours; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def log_formatter(environ: Mapping[str, str]) -> logging.Formatter:
    """Each line with its time (UTC), in the foreground; under systemd (JOURNAL_STREAM
    set) without, as journald keeps its own."""
    if "JOURNAL_STREAM" in environ:
        return logging.Formatter("%(levelname)s %(name)s: %(message)s")
    f = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ"
    )
    f.converter = time.gmtime
    return f


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser(argv).parse_args(argv)
    # The agent's log is a fleet's record (journald under systemd adds the time): what it
    # does, at INFO, by default; other commands say only what goes wrong unless -v.
    agent_run = getattr(args, "func", None) is cmd_agent_run
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(os.environ))
    logging.basicConfig(
        level=logging.INFO if args.verbose or agent_run else logging.WARNING, handlers=[handler]
    )
    try:
        return int(args.func(args))
    except (
        CliError,
        ConfigError,
        FontError,
        SessionError,
        RecorderBusy,
        ProvisionError,
        BrokerError,
    ) as e:
        print(f"unbroken: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

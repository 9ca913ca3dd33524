"""The ``unbroken`` command: one CLI, with a subcommand for each user.

- ``unbroken agent run|explain|keygen|install|apply|rotate-key|status`` (the device)
- ``unbroken provision init-agency|enroll|assign|revoke|broker-config ...`` (the admin)
- ``unbroken store run|report|explain|send|lay-out|export --config store.toml`` (the agency)
- ``unbroken sim session --seconds N --data DIR [--badge B]`` (testers)
- ``unbroken verify DIR [--pubkey FILE] [--evidence-key FILE] [--session ID] [--decode]
  [--json] [--strict]`` (anyone)
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
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.device_cli import add_agent_commands
from agent.device_lock import RecorderBusy
from agent.session import SessionError
from agent.watermark import FontError
from common.cli import (
    CliError,
    add_pin_options,
    add_progress_options,
    plain_text,
)
from common.files import ConfigError
from common.settings import Category
from evidence.names import ProvisionError
from simulator.cli import add_sim_parsers
from simulator.mosquitto import BrokerError
from unbroken.device_commands import cmd_agent_explain, cmd_agent_run, cmd_sim_session
from unbroken.evidence_commands import (
    cmd_export,
    cmd_store_export,
    cmd_verify,
    export_arguments,
    software_version,
)


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
    p.add_argument("--version", action="version", version=f"%(prog)s {software_version()}")
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
        help="the agency's evidence key (hex): decrypt every segment, and check "
        "what it decrypts to (without it, encrypted segments are checked by their framing)",
    )
    v.add_argument(
        "--session",
        help="this session only: its entries, the links at its edges and its segments",
    )
    v.add_argument(
        "--decode",
        action="store_true",
        help="decode every picture and sound (slow); by default each segment is hashed and "
        "its packets counted, which the sealed SHA-256 makes enough",
    )
    add_progress_options(v)
    v.set_defaults(func=cmd_verify)

    x = sub.add_parser(
        "export", help="verify, then write a session as one MP4 per track and its custody summary"
    )
    x.add_argument("dir", type=Path, help="the evidence directory")
    export_arguments(x)
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
    export_arguments(se)
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

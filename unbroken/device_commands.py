"""``unbroken agent run``, ``unbroken agent explain`` and ``unbroken sim session``: the
device's commands that are not in :mod:`agent.device_cli` (they need the simulator or the
hardware). The parser that routes to them is :mod:`unbroken.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.at_rest import EvidenceKeyError
from agent.config import load_config
from common.archive.archive import ArchiveError
from common.cli import CliError
from common.files import unwritable_dir


def _data_dir(path: Path) -> Path:
    if why := unwritable_dir(path):
        raise CliError(f"data directory {path} is not writable: {why}")
    return path


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
    from agent.statement import seal_statement
    from common.archive.device_directory import read_public_key
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
    except (StatementError, ArchiveError) as e:
        raise CliError(str(e)) from None
    print(f"written statement sealed as entry {entry.seq} for gap {args.gap}")
    return 0

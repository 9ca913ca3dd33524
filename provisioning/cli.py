"""``unbroken provision ...``: the administrator's commands (docs/provisioning.md).

    unbroken provision init-agency --dir AGENCY [--name NAME] [--broker HOST:PORT]
    unbroken provision enroll REQUEST --agency AGENCY --out BUNDLE [--settings FILE.toml]
    unbroken provision reissue --device D --out BUNDLE [--settings FILE.toml]
    unbroken provision assign --device D --badge B [--name N] [--unit U] [--room R]
    unbroken provision unassign --device D
    unbroken provision open-session --device ROOM-CTRL --case C --badge B [--person P]
    unbroken provision close-session --device ROOM-CTRL --case C [--session ID]
    unbroken provision revoke D --reason R
    unbroken provision rotate REQUEST
    unbroken provision broker-config --agency AGENCY --out DIR --port PORT
    unbroken provision enroll-panel --room R --out DIR
    unbroken provision enroll-store --name N --out DIR
    unbroken provision officers (--officer BADGE ... | --pins FILE) --out officers.json
    unbroken provision devices

``--agency`` defaults to $UNBROKEN_AGENCY. The parser is here; what each subcommand does is
in :mod:`provisioning.cli_handlers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.bundle import Broker
from common.cli import Deprecated, add_pin_options
from provisioning.cli_handlers import (
    cmd_assign,
    cmd_broker_config,
    cmd_devices,
    cmd_enroll,
    cmd_enroll_panel,
    cmd_enroll_store,
    cmd_init,
    cmd_officers,
    cmd_reissue,
    cmd_renew_crl,
    cmd_revoke,
    cmd_rotate,
    cmd_session,
    cmd_unassign,
)


def parse_broker(value: str) -> Broker:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return Broker(host=host.strip("[]"), port=int(port))


def add_provision_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="agency: keys, CA, device registry, broker config")
    ps = p.add_subparsers(dest="provision_command", required=True)

    def agency_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--agency", type=Path, help="agency directory (default $UNBROKEN_AGENCY)")

    q = ps.add_parser("init-agency", help="create the agency keys, CA and registry")
    q.add_argument("--agency", type=Path, help="agency directory to create")
    q.add_argument("--dir", type=Path, dest="agency", action=Deprecated, new="--agency")
    q.add_argument("--name", default="Unbroken agency", help="agency name (CA subject)")
    q.add_argument(
        "--broker",
        type=parse_broker,
        default=Broker(host="127.0.0.1", port=8883),
        help="HOST:PORT devices connect to (default 127.0.0.1:8883)",
    )
    q.set_defaults(func=cmd_init)

    q = ps.add_parser("enroll", help="register a device from its request; write its bundle")
    q.add_argument("request", type=Path, nargs="+", help="enrolment request(s) from `agent keygen`")
    agency_opt(q)
    q.add_argument(
        "--out",
        type=Path,
        required=True,
        help="bundle to write; with several requests, a directory for DEVICE.bundle.json each",
    )
    q.add_argument("--settings", type=Path, help="recording settings (a device.toml)")
    q.add_argument("--broker", type=parse_broker, help="HOST:PORT, instead of the agency's")
    q.set_defaults(func=cmd_enroll)

    q = ps.add_parser("reissue", help="a new bundle for an enrolled device (renewal, settings)")
    agency_opt(q)
    q.add_argument("--device", required=True)
    q.add_argument("--out", type=Path, required=True, help="bundle to write")
    q.add_argument("--settings", type=Path, help="new recording settings (a device.toml)")
    q.add_argument("--broker", type=parse_broker, help="HOST:PORT, instead of the agency's")
    q.set_defaults(func=cmd_reissue)

    q = ps.add_parser("assign", help="assign a device to officers (or a room controller)")
    agency_opt(q)
    q.add_argument("--device", required=True)
    q.add_argument("--badge", action="append", help="officer badge number (repeatable)")
    q.add_argument("--name", help="officer name")
    q.add_argument("--unit", help="unit")
    q.add_argument("--room", help="room a room controller serves")
    q.add_argument("--out", type=Path, help="signed command file (default AGENCY/outbox/)")
    q.set_defaults(func=cmd_assign)

    q = ps.add_parser("unassign", help="end a device's assignment")
    agency_opt(q)
    q.add_argument("--device", required=True)
    q.add_argument("--out", type=Path, help="signed command file (default AGENCY/outbox/)")
    q.set_defaults(func=cmd_unassign)

    for verb, what in (("open-session", "opens"), ("close-session", "closes")):
        q = ps.add_parser(verb, help=f"signed command that {what} an interview-room session")
        agency_opt(q)
        q.add_argument("--device", required=True, help="the room controller")
        q.add_argument("--case", required=True, help="case number")
        q.add_argument("--badge", action="append", help="officer badge number (repeatable)")
        q.add_argument("--person", help="the person interviewed")
        if verb == "open-session":
            q.add_argument("--category", help="enforcement category")
        else:
            q.add_argument(
                "--session", help="the session id it closes (refused if another is open)"
            )
        q.add_argument("--ttl", type=float, default=600.0, help="seconds the command is valid")
        q.add_argument("--out", type=Path, help="signed command file (default AGENCY/outbox/)")
        q.set_defaults(func=cmd_session)

    q = ps.add_parser("revoke", help="revoke a device (or panel-R, store-N); rewrite the CRL")
    q.add_argument("--device", help="device id, panel-ROOM or store-NAME")
    q.add_argument("subject", nargs="?", help=argparse.SUPPRESS)  # the old positional spelling
    agency_opt(q)
    q.add_argument("--reason", required=True)
    q.set_defaults(func=cmd_revoke)

    q = ps.add_parser("rotate", help="import a device's key rotation request")
    q.add_argument("request", type=Path)
    agency_opt(q)
    q.set_defaults(func=cmd_rotate)

    q = ps.add_parser("broker-config", help="write a Mosquitto configuration for the fleet")
    agency_opt(q)
    q.add_argument("--out", type=Path, required=True, help="directory to write")
    q.add_argument(
        "--port", type=int, help="TLS port (default, and it must be: the agency's broker port)"
    )
    q.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    q.add_argument("--run-as", help="user mosquitto runs as (default: the current user)")
    q.add_argument(
        "--name", action="append", default=[], help="extra DNS name or IP for the server cert"
    )
    q.set_defaults(func=cmd_broker_config)

    q = ps.add_parser(
        "renew-crl", help="renew the CRL before it runs out (the shipped timer runs this daily)"
    )
    agency_opt(q)
    q.add_argument("--out", type=Path, required=True, help="the broker-config directory")
    q.add_argument(
        "--within-days",
        type=float,
        default=10.0,
        help="renew when the CRL runs out within this many days (default 10)",
    )
    q.add_argument(
        "--reload",
        help="command that reloads the broker, e.g. 'systemctl reload unbroken-broker': run "
        "until the broker itself says it holds the newest CRL",
    )
    q.add_argument("--tries", type=int, default=5, help="reloads before giving up (default 5)")
    q.add_argument("--wait", type=float, default=3.0, help="seconds between reloads (default 3)")
    q.set_defaults(func=cmd_renew_crl)

    q = ps.add_parser("enroll-panel", help="P-256 key and certificate (DER) for a room panel")
    agency_opt(q)
    q.add_argument("--room", required=True)
    q.add_argument("--out", type=Path, required=True, help="directory to write")
    q.set_defaults(func=cmd_enroll_panel)

    q = ps.add_parser("enroll-store", help="client certificate for a store worker")
    agency_opt(q)
    q.add_argument("--name", required=True, help="store name (certificate CN store-NAME)")
    q.add_argument("--out", type=Path, required=True, help="directory to write")
    q.set_defaults(func=cmd_enroll_store)

    q = ps.add_parser("officers", help="agency-signed officer list (badge + PIN digest)")
    agency_opt(q)
    add_pin_options(
        q, "--officer", "an officer's badge number (repeatable; default: all in --pins)"
    )
    q.add_argument("--out", type=Path, required=True, help="officer list to write")
    q.set_defaults(func=cmd_officers)

    q = ps.add_parser("devices", help="list the registry's devices")
    agency_opt(q)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_devices)

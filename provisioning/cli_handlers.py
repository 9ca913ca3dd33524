"""What each ``unbroken provision`` subcommand does: read its arguments, call the
agency (:mod:`provisioning.agency`, :mod:`provisioning.broker_config`) and say what it did.
The parser that routes to them is :mod:`provisioning.cli`. Handlers raise ProvisionError
for user errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

from common.cli import officers_pins, user_errors
from common.commands import AssignmentArgs
from common.requests import check_request
from evidence.names import ProvisionError, iso
from provisioning.agency import Agency, init_agency
from provisioning.agency_directory import PRIVATE
from provisioning.broker_config import (
    crl_expiry_note,
    crl_valid_until,
    install_crl,
    renew_crl,
    write_broker_config,
)
from provisioning.crl_probe import (
    Verdict,
    broker_serves,
    first_answer,
    listener,
    reload_until_current,
)


def _agency(args: argparse.Namespace) -> Agency:
    root = args.agency or os.environ.get("UNBROKEN_AGENCY")
    if not root:
        raise ProvisionError("no agency directory: pass --agency AGENCY or set UNBROKEN_AGENCY")
    return Agency(Path(root))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisionError(f"{path}: no such {what}") from None


def _outbox(agency: Agency, device: str, command: str, now: float) -> Path:
    """Where a command goes when no --out is given: AGENCY/outbox/<device>/."""
    folder = agency.root / "outbox" / device
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{command}.json"


@user_errors
def cmd_init(args: argparse.Namespace) -> int:
    if args.agency is None:
        raise ProvisionError("init-agency needs --agency DIR: the agency directory to create")
    agency = init_agency(args.agency, args.name, args.broker, time.time())
    print(f"agency {agency.config.name!r} created in {args.agency}")
    print(f"  agency key {agency.root / 'agency.pub'}; CA {agency.root / 'ca.pem'}")
    print(f"  devices will be told the broker is at {args.broker.host}:{args.broker.port}")
    return 0


@user_errors
def cmd_enroll(args: argparse.Namespace) -> int:
    """One request: ``--out`` is the bundle. Several: ``--out`` is a directory receiving
    ``<device>.bundle.json`` each; every request is checked before any is enrolled."""
    agency, now = _agency(args), time.time()
    settings = _settings(args.settings) or {}
    paths: list[Path] = args.request
    requests = [_read(path, "enrolment request") for path in paths]
    if len(paths) == 1:
        outs = [args.out]
    else:
        ids = []
        for path, data in zip(paths, requests, strict=True):
            try:
                device = check_request(data, now).payload.device_id
            except ProvisionError as e:
                raise ProvisionError(f"{path}: {e} (nothing enrolled)") from None
            if device in ids:
                raise ProvisionError(f"{path}: device {device!r} is twice in this batch")
            if agency.registry.device(device) is not None:
                raise ProvisionError(f"{path}: device {device!r} is already enrolled")
            ids.append(device)
        args.out.mkdir(parents=True, exist_ok=True)
        outs = [args.out / f"{device}.bundle.json" for device in ids]
    for data, out in zip(requests, outs, strict=True):
        done = agency.enroll(data, out, now, settings=settings, broker=args.broker)
        print(f"enrolled {done.device_id} ({done.role}), certificate {done.certificate_serial}")
        print(f"  bundle {out} (sha256 {done.bundle_sha256[:16]}…): install it on the device")
    return 0


def _settings(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return tomllib.loads(_read(path, "settings file").decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProvisionError(f"{path}: not valid TOML: {e}") from None


@user_errors
def cmd_reissue(args: argparse.Namespace) -> int:
    agency = _agency(args)
    done = agency.reissue(
        args.device, args.out, time.time(), settings=_settings(args.settings), broker=args.broker
    )
    print(f"new bundle for {done.device_id}, certificate {done.certificate_serial}: {args.out}")
    return 0


@user_errors
def cmd_assign(args: argparse.Namespace) -> int:
    agency, now = _agency(args), time.time()
    out = args.out or _outbox(agency, args.device, "assign", now)
    cmd = agency.assign(args.device, out, now, args.badge, args.name, args.unit, args.room)
    assert isinstance(cmd.args, AssignmentArgs)
    who = ", ".join(cmd.args.badges) or f"room {cmd.args.room}"
    print(f"assigned {args.device} to {who}; command {out} valid until {iso(cmd.expires)}")
    if cmd.args.room:
        print("  rerun broker-config and reload the broker: the room's ACL changed")
    return 0


@user_errors
def cmd_unassign(args: argparse.Namespace) -> int:
    agency, now = _agency(args), time.time()
    out = args.out or _outbox(agency, args.device, "unassign", now)
    cmd = agency.unassign(args.device, out, now)
    print(f"unassigned {args.device}; command {out} valid until {iso(cmd.expires)}")
    return 0


@user_errors
def cmd_session(args: argparse.Namespace) -> int:
    """The case system's session-open / session-close command for an interview room."""
    agency, now = _agency(args), time.time()
    name: Literal["session_open", "session_close"] = (
        "session_open" if args.provision_command == "open-session" else "session_close"
    )
    out = args.out or _outbox(agency, args.device, name, now)
    fields = {"case": args.case, "badges": args.badge or [], "person": args.person}
    if name == "session_open":
        fields["category"] = args.category
    elif args.session:
        fields["session"] = args.session
    cmd = agency.session_command(args.device, name, fields, out, now, ttl=args.ttl)
    print(f"{name} for {args.device}, case {args.case}: {out} valid until {iso(cmd.expires)}")
    print("  deliver it with: unbroken store send --config STORE.toml " + str(out))
    return 0


@user_errors
def cmd_revoke(args: argparse.Namespace) -> int:
    device = args.device
    if args.subject is not None:
        if device is not None and device != args.subject:
            raise ProvisionError(f"revoke names two devices: {args.subject} and {device}")
        print(
            "unbroken provision revoke: note: the device as a positional argument is deprecated"
            f" and will be removed in the next release; use --device {args.subject}",
            file=sys.stderr,
        )
        device = args.subject
    if device is None:
        raise ProvisionError("revoke needs --device ID (a device id, panel-ROOM or store-NAME)")
    agency, now = _agency(args), time.time()
    count = agency.revoke(device, args.reason, now)
    print(f"revoked {device} at {iso(now)}: {count} certificate(s) in {agency.root}/crl.pem")
    print("  rerun broker-config and reload the broker so that it refuses them")
    return 0


@user_errors
def cmd_rotate(args: argparse.Namespace) -> int:
    agency = _agency(args)
    device, old, new = agency.rotate(_read(args.request, "rotation request"), time.time())
    print(f"{device}: key {old} retired, key {new} registered")
    return 0


@user_errors
def cmd_broker_config(args: argparse.Namespace) -> int:
    agency, now = _agency(args), time.time()
    b = agency.config.broker
    if args.port is not None and args.port != b.port:
        raise ProvisionError(
            f"the agency tells devices and stores the broker is at {b.host}:{b.port} "
            f"(agency.toml [broker]); a broker on port {args.port} would be reached by none of "
            "them: omit --port (it is taken from the agency), or change the agency's broker "
            "address first"
        )
    files = write_broker_config(
        agency, args.out, b.port, now, bind=args.bind, run_as=args.run_as, names=args.name
    )
    print(f"mosquitto configuration in {args.out}: mosquitto -c {files[0]}")
    print(f"  {crl_expiry_note(agency, now)}")
    return 0


@user_errors
def cmd_renew_crl(args: argparse.Namespace) -> int:
    """Renew the CRL when due, put the agency's newest into the broker's directory, and
    (``--reload``) reload the broker until the broker itself says it holds it: a reload
    that failed on an earlier run is made again on this one."""
    agency, now = _agency(args), time.time()
    until = renew_crl(agency, args.out, now, args.within_days)
    valid = crl_valid_until(agency)
    if until is not None:
        print(f"CRL renewed in {agency.root / 'crl.pem'} and {args.out}: valid until {iso(until)}")
    elif install_crl(agency, args.out):
        print(f"CRL valid until {iso(valid)}: the agency's newest put into {args.out}")
    else:
        print(f"CRL valid until {iso(valid)} ({(valid - now) / 86400:.1f} days): not renewed")
    host, port = listener(args.out / "mosquitto.conf")

    def ask() -> Verdict:
        return broker_serves(agency.root, agency.root / PRIVATE, host, port)

    if not args.reload:
        verdict = first_answer(ask, args.tries, args.wait)
        print(f"  {verdict.text}")
        if not verdict.current:
            print("  reload the broker so that it reads it (kill -HUP <mosquitto pid>)")
        return 0 if verdict.current else 1
    verdict, reloads = reload_until_current(
        ask, lambda: _reload(args.reload), args.tries, args.wait
    )
    if not verdict.current:
        raise ProvisionError(
            f"{verdict.text} after {reloads} reload(s) with {args.reload!r}: the broker "
            f"refuses every client when its CRL expires; reload it by hand"
        )
    print(f"  {verdict.text}" + (f" (reloaded: {args.reload})" if reloads else ""))
    return 0


def _reload(command: str) -> None:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProvisionError(f"reload command {command!r} failed: {e}") from None
    if done.returncode != 0:
        raise ProvisionError(
            f"reload command {command!r} exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[:300]}"
        )


@user_errors
def cmd_enroll_panel(args: argparse.Namespace) -> int:
    cn = _agency(args).enroll_panel(args.room, args.out, time.time())
    print(f"{cn}: key, certificate and CA (DER) in {args.out}; copy them to the panel")
    print("  rerun broker-config and reload the broker: the room's ACL changed")
    return 0


@user_errors
def cmd_enroll_store(args: argparse.Namespace) -> int:
    cn = _agency(args).enroll_store(args.name, args.out, time.time())
    print(f"{cn}: key and certificate in {args.out} (see broker.toml there)")
    print("  rerun broker-config and reload the broker: the ACL changed")
    return 0


@user_errors
def cmd_officers(args: argparse.Namespace) -> int:
    from common.statements import officer_credentials

    if not args.officer and args.pins is None:
        raise ProvisionError("name the officers with --officer BADGE (repeatable) or --pins FILE")
    pins = officers_pins("--officer", args.officer, args.pins, confirm=True)
    if short := [b for b, pin in pins.items() if len(pin) < 4]:
        raise ProvisionError(f"officer {', '.join(short)}: a PIN needs at least 4 characters")
    args.out.write_bytes(officer_credentials(_agency(args).signing_key, pins))
    print(f"officer list for {len(pins)} officers in {args.out}, signed by the agency;")
    print("  devices check written statements against it (`agent explain --credentials`)")
    return 0


@user_errors
def cmd_devices(args: argparse.Namespace) -> int:
    reg = _agency(args).registry
    rows = [
        {
            **d,
            "keys": [
                {"key_id": k.key_id, "valid_from": k.valid_from, "valid_until": k.valid_until}
                for k in reg.device_keys(d["device_id"])
            ],
            "assignment": reg.assignment(d["device_id"]),
        }
        for d in reg.devices()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        state = f"revoked {iso(r['revoked_at'])}" if r["revoked_at"] else "active"
        a = r["assignment"]
        who = (", ".join(a["badges"]) or f"room {a['room']}") if a else "unassigned"
        print(f"{r['device_id']:<20} {r['role']:<16} {r['serial']:<16} {state:<28} {who}")
    return 0

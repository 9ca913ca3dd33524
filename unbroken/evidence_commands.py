"""``unbroken verify``, ``unbroken export`` and ``unbroken store export``: the archive they
read (a device's directory, :class:`common.archive.device_directory.DeviceDirectory`, or
the store's holdings, :class:`store.archive.StoreArchive`) and the export options they
share. The parser that routes to them is :mod:`unbroken.cli`."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import nacl.signing

from common.archive.archive import Archive, ArchiveError
from common.archive.device_directory import (
    DeviceDirectory,
    read_evidence_key,
    read_public_key,
)
from common.archive.verify import verify_archive
from common.cli import CliError, add_progress_options, progress_wanted
from common.files import unwritable_dir
from common.progress import Progress
from evidence.verify_report import format_report


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
        archive = DeviceDirectory(root)
        key = read_evidence_key(args.evidence_key) if args.evidence_key else None
        if key is not None and (
            wrong := wrong_evidence_key(archive.entries(), key_id(key.public_key))
        ):
            key = None  # the bytes, framing and counts are checked as without a key
        pin = read_public_key(args.pubkey) if args.pubkey else None
        if args.session is not None and args.session not in archive.sessions():
            listing = ", ".join(archive.sessions()) or "none"
            raise CliError(f"{root} holds no session {args.session!r}; its sessions: {listing}")
        with progress_shown(progress_wanted(args)) as progress:
            if progress:
                progress("verifying", 0, None)
            report = verify_archive(
                archive,
                pin,
                strict=args.strict,
                evidence_key=key,
                progress=progress,
                session=args.session,
                decode=args.decode,
            )
    except ArchiveError as e:
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
    try:
        archive = DeviceDirectory(root)
        pin = read_public_key(args.pubkey) if args.pubkey else None
    except ArchiveError as e:
        raise CliError(str(e)) from None
    with progress_shown(progress_wanted(args)) as progress:
        return _export(archive, args, progress, pubkey=pin, evidence_key=args.evidence_key)


def cmd_store_export(args: argparse.Namespace) -> int:
    """The store's holdings exported as they are read (its database and blobs): nothing
    is laid out, nothing written but the export."""
    from common.progress import progress_shown
    from store.archive import store_archive
    from store.config import load_store_config
    from store.db import Database
    from store.evidence_view import log_access
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
    db = Database.connect(config.database)
    try:
        try:
            archive = store_archive(config, db, args.device)
        except ArchiveError as e:
            raise CliError(str(e)) from None
        statements = statements_of(db, args.device)
        # Logged before the export runs (what is asked is who took footage out), saying
        # what could happen: without the key nothing is decrypted.
        detail = (
            f"decrypted and exported to {args.out.resolve()}"
            if key.is_file()
            else f"export to {args.out.resolve()} asked for; no evidence key here"
        )
        log_access(db, args.who, "export", args.device, args.session, detail, time.time())
        source = f"store {config.name} ({config.database}), device {args.device}"
        with progress_shown(progress_wanted(args)) as progress:
            return _export(
                archive,
                args,
                progress,
                pubkey=None,  # the archive pins the key the agency registered first
                source=source,
                statements=statements,
                evidence_key=key if key.is_file() else None,
                no_key=no_key,
            )
    finally:
        db.close()


def _writable(path: Path) -> Path:
    if why := unwritable_dir(path):
        raise CliError(f"output directory {path} is not writable: {why}")
    return path


def _export(
    archive: Archive,
    args: argparse.Namespace,
    progress: Progress | None,
    pubkey: nacl.signing.VerifyKey | None,
    source: str | None = None,
    statements: dict[str, dict[str, object]] | None = None,
    evidence_key: Path | None = None,
    no_key: str | None = None,
) -> int:
    from common.archive import export_reading
    from common.archive.export import export_session
    from common.archive.export_reading import NO_KEY, ExportError, ExportRefused

    try:
        key = export_reading.read_evidence_key(evidence_key) if evidence_key else None
        result = export_session(
            archive,
            args.session,
            args.out,
            pubkey=pubkey,
            accept_problems=args.accept_problems,
            force=args.force,
            progress=progress,
            software=software_version(),
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


def export_arguments(p: argparse.ArgumentParser) -> None:
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


def software_version() -> str:
    """This software's version, as ``--version`` says it and the custody summary records it."""
    try:
        return importlib.metadata.version("unbroken")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"

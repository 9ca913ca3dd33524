"""What the store holds of one device, laid out as an evidence directory, so that the same
tools (``unbroken verify``, ``unbroken export``) run on it as on the device's own.

The store keeps each chain entry exactly as the device signed and sent it (the same
canonical bytes the device writes to ``chain/``), the media content-addressed by SHA-256
(:mod:`store.blobs`), and a signed receipt per stored segment. The layout::

    DEST/chain/0000000001.json        each entry the store accepted, its exact bytes
    DEST/segments/<session>/...       the blobs of the sessions asked for, at the names
                                      their manifests seal (copies, or hard links)
    DEST/keys/<key id>.pub            every key the agency registered for the device
    DEST/device.pub                   the newest of them
    DEST/provision/agency.pub         the agency's key, and for each stored segment not
    DEST/receipts/<sha256>.json       laid out, its receipt: verification counts it as
                                      held at the agency, not lost

Entries on a second branch of a fork (``forks``) are not laid out: the store report
names the fork. Written statements added at the agency are not chain entries either:
:func:`store.statements.statements_of` gives them.

Example::

    pin = lay_out_device(config, "bwc-1", Path("/tmp/view"), sessions={"3f2a..."})
    # unbroken verify /tmp/view --pubkey <pin>: the key registered first, pinned
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import nacl.exceptions
import nacl.signing

from common.progress import Progress
from provisioning.agency_directory import PUBLIC, REGISTRY
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore, FileBlobs
from store.config import StoreConfig
from store.db import Database
from store.directory import RegistryDirectory

LAYING_OUT = "laying out"  # the phase lay_out reports (common.progress)


class ViewError(ValueError):
    """The device's evidence cannot be laid out (unknown device, nothing stored)."""


def lay_out_device(
    config: StoreConfig,
    device: str,
    dest: Path,
    sessions: Collection[str] | None = None,
    link: bool = False,
    progress: Progress | None = None,
) -> Path:
    """:func:`lay_out` with what the store's configuration names: its database and blobs,
    the agency's registry and key."""
    keys = RegistryDirectory(config.agency / REGISTRY).device_keys(device)
    try:
        agency_key = nacl.signing.VerifyKey(
            bytes.fromhex((config.agency / PUBLIC).read_text(encoding="ascii").strip())
        )
    except (OSError, ValueError, nacl.exceptions.CryptoError):
        agency_key = None  # without it, segments not laid out count as missing
    db = Database.connect(config.database)
    try:
        blobs = FileBlobs(config.blobs)
        return lay_out(db, blobs, device, keys, agency_key, dest, sessions, link, progress)
    finally:
        db.close()


def lay_out(
    db: Database,
    blobs: BlobStore,
    device: str,
    keys: Sequence[RegisteredKey],
    agency_key: nacl.signing.VerifyKey | None,
    dest: Path,
    sessions: Collection[str] | None = None,
    link: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Lay out ``device``'s evidence in ``dest`` (new, or empty); the media of
    ``sessions`` only (None: all). ``link``: links to the blobs (read-only, as they are)
    rather than copies where the blob store can, for a view that is read and removed.
    ``progress`` hears of each chain entry laid out (LAYING_OUT). Returns the file of the
    key registered first, to pin."""
    if not keys:
        raise ViewError(f"the agency registry has no key for device {device!r}")
    rows = db.query("select seq, entry from entries where device = ? order by seq", (device,))
    if not rows:
        raise ViewError(f"the store holds no evidence of device {device!r}")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ViewError(f"{dest} is not empty")
    for sub in ("chain", "segments", "keys", "receipts", "provision"):
        (dest / sub).mkdir()
    by_age = sorted(keys, key=lambda k: k.valid_from)
    for k in by_age:
        (dest / "keys" / f"{k.key_id}.pub").write_text(bytes(k.verify_key).hex() + "\n")
    (dest / "device.pub").write_text(bytes(by_age[-1].verify_key).hex() + "\n")
    if agency_key is not None:
        (dest / "provision" / "agency.pub").write_text(bytes(agency_key).hex() + "\n")
    receipts = {
        r["sha256"]: r["receipt"]
        for r in db.query("select sha256, receipt from receipts where device = ?", (device,))
    }
    for n, row in enumerate(rows, 1):
        if progress:
            progress(LAYING_OUT, n - 1, len(rows))
        text = str(row["entry"])
        (dest / "chain" / f"{int(row['seq']):010d}.json").write_bytes(text.encode())
        payload = json.loads(text)["payload"]
        if payload["kind"] != "segment":
            continue
        sha, file = str(payload["body"].get("sha256")), payload["body"].get("file")
        wanted = sessions is None or payload["session"] in sessions
        target = _inside(dest, file)
        if wanted and target is not None and blobs.has(sha):
            _place(blobs, sha, target, link)
        elif sha in receipts and blobs.has(sha):
            (dest / "receipts" / f"{sha}.json").write_text(receipts[sha])
    if progress:
        progress(LAYING_OUT, len(rows), len(rows))
    return dest / "keys" / f"{by_age[0].key_id}.pub"


def _inside(dest: Path, file: object) -> Path | None:
    """Where a manifest's file goes, or None if its name would leave ``segments/`` (a
    manifest is the device's word: the verifier names such a file, the store never
    writes outside the view)."""
    if not isinstance(file, str):
        return None
    parts = PurePosixPath(file).parts
    if len(parts) < 2 or parts[0] != "segments" or ".." in parts:
        return None  # an absolute name starts with "/"
    return dest.joinpath(*parts)


def _place(blobs: BlobStore, sha256: str, target: Path, link: bool) -> None:
    """A read-only link to the blob (no copy of the footage) where asked and possible, else
    a read-only copy, streamed into a new file. Never onto a file there already: the entry
    laid out first keeps its name (the verifier names any later one sealing it), and
    nothing here opens a blob for writing through a link."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if link and blobs.link(sha256, target):
            return
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    except (FileExistsError, NotADirectoryError):
        return  # a name laid out already, or a file where a manifest names a directory
    with os.fdopen(fd, "wb") as out, blobs.get(sha256) as blob:
        shutil.copyfileobj(blob, out, 1 << 20)


def log_access(
    db: Database, who: str, action: str, device: str, session: str | None, detail: str, at: float
) -> None:
    """An access record (R10): who took what out of the store, when, and how. Written
    before the footage leaves, so an export that fails half way is on record too."""
    with db.transaction():
        db.execute(
            "insert into access_log (at, who, action, device, session, detail)"
            " values (?, ?, ?, ?, ?, ?)",
            (at, who, action, device, session, detail),
        )


def access_log(db: Database, device: str | None = None) -> list[dict[str, Any]]:
    if device is None:
        return db.query("select * from access_log order by at")
    return db.query("select * from access_log where device = ? order by at", (device,))

"""What the store holds of one device, laid out as an evidence directory, for a verifier
outside the agency (``unbroken verify`` on the copy, or any tool that reads the layout
of docs/evidence-format.md). ``unbroken store export`` needs no such copy: it reads the
store's holdings directly (:class:`store.archive.StoreArchive`); this lays out the same
reading. The layout::

    DEST/chain/0000000001.json        each entry the store accepted, its exact bytes
    DEST/segments/<session>/...       the blobs of the sessions asked for, at the names
                                      their manifests seal (copies, or hard links)
    DEST/keys/<key id>.pub            every key the agency registered for the device
    DEST/device.pub                   the newest of them
    DEST/provision/agency.pub         the agency's key, and for each stored segment not
    DEST/receipts/<sha256>.json       laid out, its receipt: verification counts it as
                                      held at the agency, not lost

Example::

    pin = lay_out_device(config, "bwc-1", Path("/tmp/view"), sessions={"3f2a..."})
    # unbroken verify /tmp/view --pubkey <pin>: the key registered first, pinned
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

from common.archive.archive import ArchiveError
from common.progress import Progress
from evidence.layout import AGENCY_PUB, CHAIN, KEYS, LEGACY_RECEIPTS, PUBKEY, SEGMENTS, key_name
from evidence.seal import Entry
from store.archive import StoreArchive, store_archive
from store.blobs import BlobStore
from store.config import StoreConfig
from store.db import Database

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
    """:func:`lay_out` of what the store's configuration names."""
    db = Database.connect(config.database)
    try:
        try:
            archive = store_archive(config, db, device)
        except ArchiveError as e:
            raise ViewError(str(e)) from None
        return lay_out(archive, dest, sessions, link, progress)
    finally:
        db.close()


def lay_out(
    archive: StoreArchive,
    dest: Path,
    sessions: Collection[str] | None = None,
    link: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Lay out the device's evidence in ``dest`` (new, or empty); the media of
    ``sessions`` only (None: all). ``link``: links to the blobs (read-only, as they are)
    rather than copies where the blob store can. ``progress`` hears of each chain entry
    laid out (LAYING_OUT). Returns the file of the key registered first, to pin."""
    entries = archive.entries()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ViewError(f"{dest} is not empty")
    for sub in (CHAIN, SEGMENTS, KEYS, LEGACY_RECEIPTS, "provision"):
        (dest / sub).mkdir()
    for k in archive.keys:
        (dest / key_name(k.key_id)).write_text(bytes(k.verify_key).hex() + "\n")
    (dest / PUBKEY).write_text(bytes(archive.newest_key()).hex() + "\n")
    if (agency := archive.agency_key()) is not None:
        (dest / AGENCY_PUB).write_text(bytes(agency).hex() + "\n")
    for n, (name, e) in enumerate(entries, 1):
        if progress:
            progress(LAYING_OUT, n - 1, len(entries))
        if not isinstance(e, Entry):
            continue  # the store keeps only entries that read
        (dest / name).write_bytes(e.to_json())
        if e.kind != "segment":
            continue
        sha, file = str(e.body.get("sha256")), e.body.get("file")
        wanted = sessions is None or e.session in sessions
        inside = isinstance(file, str) and archive.unsafe(file) is None
        if wanted and inside and archive.holds(str(file), sha):
            _place(archive.blobs, sha, dest / str(file), link)
        elif (receipt := archive.stored_receipt(sha)) is not None:
            (dest / LEGACY_RECEIPTS / f"{sha}.json").write_bytes(receipt)
    if progress:
        progress(LAYING_OUT, len(entries), len(entries))
    return dest / key_name(archive.keys[0].key_id)


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

"""What the store holds of one device, read as an :class:`common.archive.archive.Archive`,
so that verification and export read it as they read a device's own directory, with no
copy laid out: the chain's entries from the ``entries`` table, exactly as the device
signed them, its media from the blob store (a stream), its receipts from ``receipts``,
its keys from the agency's registry. Read only: nothing here writes.

The table's indexes make one session cost what it holds: its span by
``entries_by_session``, the sessions and the key rotations before a span by
``entries_by_kind``, a span's entries by the primary key. Entries on a fork's second
branch (``forks``) are not served: the store report names the fork. Written statements
added at the agency are not chain entries either: :func:`store.statements.statements_of`.

Example::

    archive = StoreArchive(db, FileBlobs(blobs), "bwc-1", registry.device_keys("bwc-1"), agency)
    verify_archive(archive, session=archive.sessions()[-1])   # pinned: first key registered
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import PurePosixPath
from typing import BinaryIO

import nacl.exceptions
import nacl.signing

from common.archive.archive import Archive, ArchiveError, Named
from evidence.layout import SEGMENTS, entry_name
from evidence.seal import Entry, SealError
from provisioning.agency_directory import PUBLIC, REGISTRY
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore, FileBlobs
from store.config import StoreConfig
from store.db import Database
from store.directory import RegistryDirectory


class StoreArchive(Archive):
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        device: str,
        keys: Sequence[RegisteredKey],
        agency_key: nacl.signing.VerifyKey | None,
    ) -> None:
        if not keys:
            raise ArchiveError(f"the agency registry has no key for device {device!r}")
        if not db.query("select seq from entries where device = ? limit 1", (device,)):
            raise ArchiveError(f"the store holds no evidence of device {device!r}")
        self.db, self.blobs, self.device = db, blobs, device
        self.keys = sorted(keys, key=lambda k: k.valid_from)  # the first registered first
        self._agency = agency_key

    def describe(self) -> str:
        return f"device {self.device} at the store"

    def entries(self, first: int | None = None, last: int | None = None) -> list[Named]:
        rows = self.db.query(
            "select seq, entry from entries where device = ? and seq >= ? and seq <= ?"
            " order by seq",
            (self.device, first or 0, last if last is not None else 2**62),
        )
        return [_parsed(r) for r in rows]

    def entries_of_kind(self, kinds: Collection[str], before: int) -> list[Named]:
        marks = ", ".join("?" for _ in kinds)
        rows = self.db.query(
            f"select seq, entry from entries where device = ? and kind in ({marks})"
            " and seq < ? order by seq",
            (self.device, *kinds, before),
        )
        return [_parsed(r) for r in rows]

    def sessions(self) -> list[str]:
        rows = self.db.query(
            "select session from entries where device = ? and kind = 'session_open' order by seq",
            (self.device,),
        )
        return [str(r["session"]) for r in rows if r["session"]]

    def session_span(self, session: str) -> tuple[int, int] | None:
        (row,) = self.db.query(
            "select min(seq) as first, max(seq) as last from entries"
            " where device = ? and session = ?",
            (self.device, session),
        )
        if row["first"] is None:
            return None
        return int(row["first"]), int(row["last"])

    def open_media(self, file: str, sha256: str) -> BinaryIO:
        return self.blobs.get(sha256)

    def holds(self, file: str, sha256: str) -> bool:
        return self.blobs.has(sha256)

    def unsafe(self, file: str) -> str | None:
        """A manifest is the device's word: a name that would leave ``segments/`` is
        named, as a device directory names one (the store holds media by hash)."""
        parts = PurePosixPath(file).parts
        if len(parts) < 2 or parts[0] != SEGMENTS or ".." in parts:
            return f"points outside {SEGMENTS}/"
        return None

    def public_key(self, key_id: str) -> nacl.signing.VerifyKey | None:
        return next((k.verify_key for k in self.keys if k.key_id == key_id), None)

    def newest_key(self) -> nacl.signing.VerifyKey:
        return self.keys[-1].verify_key

    def pinned_key(self) -> nacl.signing.VerifyKey:
        return self.keys[0].verify_key

    def stored_receipt(self, sha256: str) -> bytes | None:
        """The receipt the store issued for ``sha256``, while it holds those bytes: a
        receipt vouches that the agency holds them, and here is where it would."""
        rows = self.db.query(
            "select receipt from receipts where device = ? and sha256 = ?", (self.device, sha256)
        )
        if not rows or not self.blobs.has(sha256):
            return None
        return str(rows[0]["receipt"]).encode()

    def agency_key(self) -> nacl.signing.VerifyKey | None:
        return self._agency

    def unexpected_files(self, named: Iterable[str], session: str | None = None) -> list[str]:
        return []  # media is kept by hash, each blob for the entry that named it


def store_archive(config: StoreConfig, db: Database, device: str) -> StoreArchive:
    """``device``'s holdings in the store ``config`` names: its database (``db``, open)
    and blobs, the agency's registry and key."""
    keys = RegistryDirectory(config.agency / REGISTRY).device_keys(device)
    try:
        agency_key = nacl.signing.VerifyKey(
            bytes.fromhex((config.agency / PUBLIC).read_text(encoding="ascii").strip())
        )
    except (OSError, ValueError, nacl.exceptions.CryptoError):
        agency_key = None  # without it, receipts vouch for nothing
    return StoreArchive(db, FileBlobs(config.blobs), device, keys, agency_key)


def _parsed(row: dict[str, object]) -> Named:
    name = entry_name(int(str(row["seq"])))
    try:
        return name, Entry.from_json(str(row["entry"]).encode())
    except SealError as e:
        return name, e

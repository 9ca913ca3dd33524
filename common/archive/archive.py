"""What a reader needs of evidence at rest: the :class:`Archive` interface.

A device's data directory (or a copy of its card) is one
(:class:`common.archive.device_directory.DeviceDirectory`), the agency store's holdings of
a device another (``store.archive.StoreArchive``). Verification and export read only
through it, so they cost what is asked of them: one session's entries and media, not the
device's whole history. Media comes out as a stream, never as a path.

Example::

    archive = DeviceDirectory(Path("/var/lib/unbroken"))
    first, last = archive.session_span(archive.sessions()[-1])
    for name, entry in archive.entries(first, last): ...
    with archive.open_media("segments/3f2a/000000.mp4", sha256) as f: f.read(1 << 20)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from typing import BinaryIO

import nacl.signing

from evidence.seal import Entry, SealError

Named = tuple[str, Entry | SealError]  # an entry's name (chain/0000000001.json), parsed


class ArchiveError(RuntimeError):
    """The archive cannot be read as evidence at all (absent, no chain, a bad key file)."""


class Archive(ABC):
    """Evidence at rest, as a reader needs it."""

    @abstractmethod
    def describe(self) -> str:
        """What this is, for messages (a directory's path, a store and device)."""

    @abstractmethod
    def entries(self, first: int | None = None, last: int | None = None) -> list[Named]:
        """The chain's entries (those with sequence numbers ``first``..``last`` when
        given), parsed, each with its name; one that does not parse as its SealError."""

    @abstractmethod
    def entries_of_kind(self, kinds: Collection[str], before: int) -> list[Named]:
        """The entries of these kinds before sequence number ``before`` (key rotations,
        assignments: what says how an entry later in the chain is read)."""

    @abstractmethod
    def sessions(self) -> list[str]:
        """The sessions opened, in order."""

    @abstractmethod
    def session_span(self, session: str) -> tuple[int, int] | None:
        """The first and last sequence numbers of the session's entries (None: none)."""

    @abstractmethod
    def open_media(self, file: str, sha256: str) -> BinaryIO:
        """The bytes held as ``file`` (sealed with ``sha256``), as a stream;
        FileNotFoundError when they are not held. Ask :meth:`unsafe` first."""

    @abstractmethod
    def holds(self, file: str, sha256: str) -> bool:
        """Whether bytes are held as ``file``."""

    @abstractmethod
    def unsafe(self, file: str) -> str | None:
        """Why a manifest's file name must not be followed (None: it may)."""

    @abstractmethod
    def public_key(self, key_id: str) -> nacl.signing.VerifyKey | None:
        """The device's public key with this key id, if the archive keeps it."""

    @abstractmethod
    def newest_key(self) -> nacl.signing.VerifyKey:
        """The device's current key (ArchiveError when there is none)."""

    def pinned_key(self) -> nacl.signing.VerifyKey | None:
        """The key to pin when the reader names none (the one the agency registered
        first); None: the archive knows no key but the device's own word."""
        return None

    @abstractmethod
    def stored_receipt(self, sha256: str) -> bytes | None:
        """The receipt kept for ``sha256`` (unverified: check it with the agency key)."""

    @abstractmethod
    def agency_key(self) -> nacl.signing.VerifyKey | None:
        """The agency's public key receipts are checked with (None: not known here)."""

    @abstractmethod
    def unexpected_files(self, named: Iterable[str], session: str | None = None) -> list[str]:
        """Media files held that no entry names (``named``: the files the entries read
        name), of ``session`` only when given."""

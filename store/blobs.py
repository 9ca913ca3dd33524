"""The store's media, content-addressed and write-once: a blob's name is the SHA-256 of its
bytes, and once a name exists nothing opens it for writing, links or copies onto it again.

:class:`BlobStore` is the port the store speaks to (put whole bytes or a finished partial,
get a readable stream, has, and what durability a put gave); :class:`FileBlobs` its
backend on a file system, ``BLOBS/ab/abcdef….mp4`` (mode 0444). Chunks of a blob being
received are written at their offsets into ``BLOBS/partial/<device>.<sha>`` (``pwrite``:
idempotent, and safe when two workers write different chunks); whole blobs are written in
``BLOBS/landing/`` first. A blob is fsynced, made read-only, then hard-linked to its name
(a link never replaces a file: a name taken already keeps its bytes), before any receipt
names it.

Example::

    blobs = FileBlobs(Path("/var/lib/unbroken/blobs"))   # the file system backend
    placed = blobs.put_many([(sha256, data)])            # [Placed(sha256, new=True, ...)]
    with blobs.get(sha256) as f:
        f.read(1 << 20)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.files import fsync_dir

READ_ONLY = 0o444


@dataclass(frozen=True)
class Placed:
    """A blob put: ``new`` if this put stored it (False: those bytes were stored already,
    and are kept as they were); ``durability``: what the backend promised when it returned."""

    sha256: str
    new: bool
    durability: str


class BlobStore(ABC):
    """The port: what the store needs of wherever its media lives (:class:`FileBlobs` on a
    file system; object storage is another backend of the same port).

    Nothing here hands out a writable place: bytes go in through :meth:`put_many` or a
    finished partial (:meth:`put_partial`), and come out as a stream (:meth:`get`)."""

    durability = "none"

    @abstractmethod
    def put_many(self, blobs: Sequence[tuple[str, bytes]]) -> list[Placed]:
        """Store whole blobs (each hash checked by the caller, as it was received), durably
        and together; one :class:`Placed` each, in order."""
        ...

    @abstractmethod
    def put_partial(self, device: str, sha256: str, size: int) -> Placed | None:
        """Store the partial blob of ``device`` if its bytes are the ones announced (None:
        they are not, and the partial is kept for the caller to discard)."""
        ...

    @abstractmethod
    def write_chunk(self, device: str, sha256: str, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def discard(self, device: str, sha256: str) -> None:
        """Drop the partial blob of ``device`` (never a stored one)."""
        ...

    @abstractmethod
    def has(self, sha256: str) -> bool: ...

    @abstractmethod
    def get(self, sha256: str) -> BinaryIO:
        """The blob's bytes as a readable stream (FileNotFoundError if not stored)."""
        ...

    def link(self, sha256: str, target: Path) -> bool:
        """Make ``target`` (a new name) show the blob without a copy, read-only, where the
        backend can: False if it cannot (the caller copies from :meth:`get`)."""
        return False

    @abstractmethod
    def withdraw(self, sha256: str, touched_before: float | None = None) -> bool:
        """Remove a blob that nothing refers to: the caller has checked no receipt names it
        (a put whose batch failed, an orphan of a crash). Never for a receipted blob.
        ``touched_before``: only if no put has touched it since (a put of bytes stored
        already touches them, so a sweep spares a blob being receipted again)."""
        ...

    @abstractmethod
    def unclaimed_before(self, cutoff: float) -> Iterator[str]:
        """The stored blobs last touched before ``cutoff`` (seconds since the epoch), for
        a sweep to check against the database; and stale landings, removed as found."""
        ...


class FileBlobs(BlobStore):
    durability = "fsync: the file and its directory on this host's disk"

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("partial", "landing"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        """Where a stored blob is (read-only); never handed out."""
        return self.root / sha256[:2] / f"{sha256}.mp4"

    def partial(self, device: str, sha256: str) -> Path:
        return self.root / "partial" / f"{device}.{sha256}"

    def has(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def get(self, sha256: str) -> BinaryIO:
        return open(self._path(sha256), "rb")

    def link(self, sha256: str, target: Path) -> bool:
        try:
            os.link(self._path(sha256), target)  # never replaces: EEXIST if target is there
        except FileExistsError:
            raise
        except OSError:
            return False  # another file system, or links not allowed: copy
        return True

    def write_chunk(self, device: str, sha256: str, offset: int, data: bytes) -> None:
        fd = os.open(self.partial(device, sha256), os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def put_partial(self, device: str, sha256: str, size: int) -> Placed | None:
        part = self.partial(device, sha256)
        if not part.exists() and self._stored_as(sha256, size) and self._touch(sha256):
            # placed before a crash or by another worker, not yet receipted: kept
            return Placed(sha256, False, self.durability)
        h = hashlib.sha256()
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            os.fsync(f.fileno())
        if h.hexdigest() != sha256 or part.stat().st_size != size:
            return None
        new = self._place(part, sha256)
        part.unlink()
        fsync_dir(part.parent)
        return Placed(sha256, new, self.durability)

    def put_many(self, blobs: Sequence[tuple[str, bytes]]) -> list[Placed]:
        """Write each blob not stored yet into ``landing/``, fsync them all, then link them
        to their names and fsync their directories once: the disk writes them back together
        rather than one fsync at a time."""
        landed: dict[str, Path] = {}
        try:
            for sha256, data in blobs:
                if sha256 in landed or self._touch(sha256):
                    continue
                fd, name = tempfile.mkstemp(prefix=f"{sha256}.", dir=self.root / "landing")
                landed[sha256] = Path(name)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            new = {sha256 for sha256, path in landed.items() if self._place(path, sha256)}
        finally:
            for path in landed.values():
                path.unlink(missing_ok=True)
        for d in {self._path(s).parent for s in new}:
            fsync_dir(d)
        return [Placed(sha256, sha256 in new, self.durability) for sha256, _ in blobs]

    def _place(self, written: Path, sha256: str) -> bool:
        """Link a written (fsynced) file to its name, read-only; False if the name was taken
        (by the same bytes: its name is their hash), which is left as it is."""
        os.chmod(written, READ_ONLY)
        dest = self._path(sha256)
        dest.parent.mkdir(exist_ok=True)
        try:
            os.link(written, dest)
        except FileExistsError:
            return False
        return True

    def _touch(self, sha256: str) -> bool:
        """Whether the blob is stored; if so, marked as just put (its times, not its bytes),
        so that a sweep does not take it while its new receipt is being written."""
        try:
            os.utime(self._path(sha256))
        except FileNotFoundError:
            return False
        return True

    def _stored_as(self, sha256: str, size: int) -> bool:
        try:
            return self._path(sha256).stat().st_size == size
        except FileNotFoundError:
            return False

    def discard(self, device: str, sha256: str) -> None:
        self.partial(device, sha256).unlink(missing_ok=True)

    def withdraw(self, sha256: str, touched_before: float | None = None) -> bool:
        path = self._path(sha256)
        try:
            if touched_before is not None and _touched(path) >= touched_before:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def unclaimed_before(self, cutoff: float) -> Iterator[str]:
        for f in (self.root / "landing").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if _touched(f) < cutoff:  # a put that died before it placed the file
                    f.unlink()
        for d in sorted(self.root.iterdir()):
            if len(d.name) != 2 or not d.is_dir():
                continue
            for f in d.iterdir():
                sha256 = f.name.removesuffix(".mp4")
                try:
                    old = _touched(f) < cutoff
                except FileNotFoundError:
                    continue
                if old and f.suffix == ".mp4" and len(sha256) == 64:
                    yield sha256


def _touched(f: Path) -> float:
    """When a file was written or linked (a link sets ctime, not mtime)."""
    st = f.stat()
    return max(st.st_mtime, st.st_ctime)

"""Content-addressed blob files: ``BLOBS/ab/abcdef….mp4``, whole or assembled from chunks.

Chunks of a blob being received are written at their offsets into
``BLOBS/partial/<device>.<sha>``
(``pwrite``: idempotent, and safe when two workers write different chunks). A complete blob
is hashed, fsynced and renamed into place before any receipt names it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from common.files import fsync_dir


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "partial").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.mp4"

    def partial(self, device: str, sha256: str) -> Path:
        return self.root / "partial" / f"{device}.{sha256}"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def write_chunk(self, device: str, sha256: str, offset: int, data: bytes) -> None:
        fd = os.open(self.partial(device, sha256), os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def complete(self, device: str, sha256: str, size: int) -> bool:
        """Hash the assembled blob; if it is the one announced, fsync it into place (or, if
        those bytes are stored already, keep the one copy)."""
        part = self.partial(device, sha256)
        h = hashlib.sha256()
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            os.fsync(f.fileno())
        if h.hexdigest() != sha256 or part.stat().st_size != size:
            return False
        dest = self.path(sha256)
        if dest.is_file():
            part.unlink()
            return True
        dest.parent.mkdir(exist_ok=True)
        os.replace(part, dest)
        for d in (dest.parent, part.parent):
            fsync_dir(d)
        return True

    def write(self, sha256: str, data: bytes) -> None:
        """Write a blob that came whole (its hash checked) beside its place, not yet
        durable: :meth:`make_durable` does that for many at once. Bytes stored already are
        kept once."""
        dest = self.path(sha256)
        if dest.is_file():
            return
        dest.parent.mkdir(exist_ok=True)
        with open(self._landing(sha256), "wb") as f:
            f.write(data)

    def make_durable(self, sha256s: list[str]) -> None:
        """fsync the blobs written, rename them into place, fsync their directories once:
        the disk writes them all back together rather than one fsync at a time."""
        landed = [s for s in dict.fromkeys(sha256s) if self._landing(s).is_file()]
        for sha256 in landed:
            fd = os.open(self._landing(sha256), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for sha256 in landed:
            os.replace(self._landing(sha256), self.path(sha256))
        for d in {self.path(s).parent for s in landed}:
            fsync_dir(d)

    def _landing(self, sha256: str) -> Path:
        return self.path(sha256).with_suffix(".landing")

    def discard(self, device: str, sha256: str) -> None:
        self.partial(device, sha256).unlink(missing_ok=True)

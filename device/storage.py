"""The storage port: how full the evidence volume is.

Example::

    disk = DiskStorage(Path("/var/lib/unbroken"))
    disk.usage().fraction_used
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Usage:
    total: int
    free: int

    @property
    def fraction_used(self) -> float:
        return 1 - self.free / self.total if self.total else 1.0


class Storage(Protocol):
    def usage(self) -> Usage: ...


class DiskStorage:
    """The filesystem that holds the data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def usage(self) -> Usage:
        u = shutil.disk_usage(self.root)
        return Usage(total=u.total, free=u.free)


class SimStorage:
    """A simulated volume: ``capacity`` bytes, whose use is what lies under ``root`` plus a
    ``filler`` (None: the real disk that holds ``root``, minus the filler).

    ``fill(free_bytes)`` is a tester's switch: the volume has that many bytes free from now
    on, and what the device writes after comes off them, as a card filling up would;
    ``fill(None)`` gives the volume back.

    Example::

        card = SimStorage(root, capacity=64 * 1024**3)
        card.fill(10_000_000)       # 10 MB left, then less with every segment written
    """

    def __init__(self, root: Path, capacity: int | None = None) -> None:
        self.root, self.capacity, self.filler = root, capacity, 0
        self.limit: int | None = None  # bytes free when a tester filled the volume
        self._written_before = 0

    @property
    def filled(self) -> bool:
        return self.limit is not None

    def fill(self, free_bytes: int | None) -> None:
        if free_bytes is not None and free_bytes < 0:
            raise ValueError(f"free_bytes must be 0 or more, not {free_bytes}")
        self.limit = free_bytes
        self._written_before = _tree_size(self.root)

    def usage(self) -> Usage:
        if self.capacity is None:
            disk = shutil.disk_usage(self.root)
            volume = Usage(total=disk.total, free=max(0, disk.free - self.filler))
        else:
            used = _tree_size(self.root) + self.filler
            volume = Usage(total=self.capacity, free=max(0, self.capacity - used))
        if self.limit is None:
            return volume
        written = max(0, _tree_size(self.root) - self._written_before)
        free = max(0, self.limit - written)
        return Usage(total=max(volume.total, free), free=free)


def _tree_size(root: Path) -> int:
    total = 0
    for p in root.rglob("*"):
        with contextlib.suppress(OSError):  # a file the recorder just renamed or removed
            if p.is_file():
                total += p.stat().st_size
    return total

"""The storage port: how full the evidence volume is.

Example::

    disk = DiskStorage(Path("/var/lib/unbroken"))
    disk.usage().fraction_used
"""

from __future__ import annotations

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
    """A volume of a given size whose use is what lies under ``root`` plus a filler."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root, self.capacity, self.filler = root, capacity, 0

    def usage(self) -> Usage:
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) + self.filler
        return Usage(total=self.capacity, free=max(0, self.capacity - used))

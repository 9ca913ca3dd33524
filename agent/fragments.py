"""After a power cut: keep what reached the disk, up to its last complete MP4 fragment.

A segment being written lives in ``spool/`` with a small sidecar (``.json``) saying where
it starts on the timeline and which session it belongs to. At the next boot such a file
is cut back to its last complete ``moof``+``mdat`` pair — a fragment is a keyframe
interval, so at most about a second is lost — and sealed as a recovered segment.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from common.files import write_atomic


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_sidecar(path: Path, info: dict[str, Any]) -> None:
    write_atomic(sidecar(path), json.dumps(info).encode())


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(sidecar(path).read_bytes())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def complete_fragments_end(data: bytes) -> int:
    """Byte length of the longest prefix made of whole boxes that ends after an ``mdat``
    (the end of a complete fragment); 0 if no fragment is complete."""
    pos, end_ok = 0, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > len(data):
                break
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        if size < header or pos + size > len(data):
            break  # size 0 (to end of file) or cut short: not complete
        pos += size
        if kind == b"mdat":
            end_ok = pos
    return end_ok


def truncate_to_fragments(path: Path) -> int:
    """Cut ``path`` back to its complete fragments; returns the kept length."""
    data = path.read_bytes()
    keep = complete_fragments_end(data)
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return keep

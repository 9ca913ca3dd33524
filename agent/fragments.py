"""MP4 fragments: where a segment's stream can be cut, and what survives a power cut.

A segment being written lives in ``spool/`` with a small sidecar (``.json``) saying where
it starts on the timeline and which session it belongs to. At the next boot such a file
is cut back to its last complete ``moof``+``mdat`` pair (in an encrypted file, to its last
complete record, which holds one fragment) — a fragment is a keyframe interval, so at
most about a second is lost — and sealed as a recovered segment.

:class:`FragmentCutter` splits the muxer's output into the messages an encrypted file is
made of: the header boxes, then one whole fragment at a time, with the frames so far.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from common.files import write_atomic
from evidence.encryption import framing, is_encrypted


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
    while (box := _box_at(data, pos)) is not None:  # size 0 (to end of file): not whole
        kind, size, _ = box
        pos += size
        if kind == b"mdat":
            end_ok = pos
    return end_ok


def truncate_to_fragments(path: Path) -> int:
    """Cut ``path`` back to its complete fragments (records, if encrypted); returns the
    kept length, 0 when no fragment is complete."""
    data = path.read_bytes()
    if is_encrypted(data):
        records = framing(data)
        keep = records.end if records.video_frames else 0
    else:
        keep = complete_fragments_end(data)
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return keep


VIDEO_TRACK, AUDIO_TRACK = 1, 2  # the order the encoder adds its streams


class FragmentCutter:
    """Cuts the MP4 byte stream a muxer writes into whole messages: everything up to the
    end of the ``moov`` (the header), then each fragment up to the end of its ``mdat``,
    with the video and audio samples the stream holds by then (from the fragments' ``trun``
    boxes). Bytes are held until their message is complete.

    Example::

        cut = FragmentCutter()
        for message, video, audio in cut.feed(data): ...   # as the muxer writes
        rest = cut.rest()                                  # what follows the last fragment
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._done = 0  # bytes of _buf in whole boxes not yet sent
        self.video = self.audio = 0

    def feed(self, data: bytes) -> list[tuple[bytes, int, int]]:
        self._buf += data
        out: list[tuple[bytes, int, int]] = []
        while True:
            box = _box_at(self._buf, self._done)
            if box is None:
                return out
            kind, size, header = box
            if kind == b"moof":
                self._count(bytes(self._buf[self._done + header : self._done + size]))
            self._done += size
            if kind in (b"moov", b"mdat"):
                out.append((bytes(self._buf[: self._done]), self.video, self.audio))
                del self._buf[: self._done]
                self._done = 0

    def rest(self) -> bytes:
        rest, self._buf, self._done = bytes(self._buf), bytearray(), 0
        return rest

    def _count(self, moof: bytes) -> None:
        for kind, body in _children(moof):
            if kind != b"traf":
                continue
            track, samples = 0, 0
            for k, b in _children(body):
                if k == b"tfhd" and len(b) >= 8:
                    track = struct.unpack_from(">I", b, 4)[0]
                elif k == b"trun" and len(b) >= 8:
                    samples += struct.unpack_from(">I", b, 4)[0]
            if track == VIDEO_TRACK:
                self.video += samples
            elif track == AUDIO_TRACK:
                self.audio += samples


def _box_at(data: bytes | bytearray, pos: int) -> tuple[bytes, int, int] | None:
    """(type, size, header size) of the whole box at ``pos``; None if it is not all there."""
    if pos + 8 > len(data):
        return None
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if pos + 16 > len(data):
            return None
        size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
    if size < header or pos + size > len(data):
        return None
    return bytes(kind), size, header


def _children(body: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while (box := _box_at(body, pos)) is not None:
        kind, size, header = box
        out.append((kind, body[pos + header : pos + size]))
        pos += size
    return out

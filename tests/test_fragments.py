"""Cutting a fragmented MP4 back to its complete fragments, on synthetic boxes."""

from __future__ import annotations

import struct

from agent.fragments import complete_fragments_end


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def test_keeps_whole_fragments_only() -> None:
    head = box(b"ftyp", b"isom") + box(b"moov", b"x" * 20)
    frag = box(b"moof", b"m" * 10) + box(b"mdat", b"d" * 50)
    data = head + frag + frag
    assert complete_fragments_end(data) == len(data)
    assert complete_fragments_end(data + box(b"moof", b"m" * 10)) == len(data)
    assert complete_fragments_end(data + box(b"moof")[:5]) == len(data)
    assert complete_fragments_end((data + frag)[:-3]) == len(data)
    assert complete_fragments_end(head) == 0
    assert complete_fragments_end(b"") == 0


def test_64_bit_sizes_and_zero_size() -> None:
    big = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"abcd"
    assert complete_fragments_end(box(b"moof") + big) == 8 + 20
    assert complete_fragments_end(box(b"moof") + struct.pack(">I4s", 0, b"mdat") + b"zz") == 0

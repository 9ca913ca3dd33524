"""What a segment file holds, read back: its hash, and its media counted from packets.

The SHA-256 proves the bytes are the ones the device sealed; the packets (demuxed, not
decoded) give the frame count, the first and last frame's times and the audio, which is
what verification sets against the manifest. Decoding every picture (``decode=True``,
``unbroken verify --decode``) checks the codec's data as well, at many times the cost.
An encrypted segment is decrypted with the agency's evidence key when given; without it,
its framing is read (the counts it carries: ``decoded`` False).

Example::

    facts, plain = read_segment(data, evidence_key)    # one decryption: facts and the MP4
    with archive.open_media(file, sha256) as f:
        facts, plain = read_stream(f, sealed_size, evidence_key)
    facts = probe_file(path)                            # a file on the device (recovery)
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
from nacl.public import PrivateKey

from evidence.encryption import EncryptionError, decrypt, framing, is_encrypted
from evidence.media_check import MediaFacts

AAC_FRAME = 1024  # samples in one AAC-LC packet


def read_stream(
    stream: BinaryIO, cap: int, agency: PrivateKey | None = None, decode: bool = False
) -> tuple[MediaFacts, bytes | None]:
    """:func:`read_segment` of a stream, keeping at most ``cap`` bytes (the size sealed):
    beyond it the bytes are only hashed (they cannot be the ones sealed)."""
    h, size, kept = hashlib.sha256(), 0, []
    while chunk := stream.read(1 << 20):
        h.update(chunk)
        size += len(chunk)
        if size <= cap:
            kept.append(chunk)
    if size > cap:
        return MediaFacts(size, h.hexdigest()), None
    return read_segment(b"".join(kept), agency, decode, h.hexdigest())


def read_segment(
    data: bytes, agency: PrivateKey | None = None, decode: bool = False, digest: str = ""
) -> tuple[MediaFacts, bytes | None]:
    """What a segment's stored bytes hold, and its MP4 (decrypted if it is encrypted;
    None when it cannot be had: encrypted and no key, or it does not decrypt).
    ``digest``: their SHA-256, when already known."""
    size, digest = len(data), digest or hashlib.sha256(data).hexdigest()
    if not is_encrypted(data[:8]):
        return _media(data, size, digest, decode), data
    try:
        if agency is None:
            fr = framing(data)
            cut = None if fr.complete else f"{fr.size - fr.end} bytes after the last record"
            audio = fr.audio_frames * AAC_FRAME
            facts = MediaFacts(
                size, digest, fr.video_frames, None, None, audio, cut, fr.key_id, decoded=False
            )
            return facts, None
        plain = decrypt(data, agency).plain
    except EncryptionError as e:
        return MediaFacts(size, digest, decode_error=str(e), encrypted=data[8:16].hex()), None
    facts = _media(plain, size, digest, decode)
    plain_sha = hashlib.sha256(plain).hexdigest()
    return replace(facts, encrypted=data[8:16].hex(), plain_sha256=plain_sha), plain


def probe(data: bytes, agency: PrivateKey | None = None, decode: bool = False) -> MediaFacts:
    return read_segment(data, agency, decode)[0]


def probe_file(path: Path, agency: PrivateKey | None = None, decode: bool = False) -> MediaFacts:
    return probe(path.read_bytes(), agency, decode)


def _media(mp4: bytes, size: int, digest: str, decode: bool) -> MediaFacts:
    try:
        return (_decoded if decode else _packets)(mp4, size, digest)
    except (av.FFmpegError, OSError, ValueError) as e:
        return MediaFacts(size, digest, decode_error=str(e))


def _packets(mp4: bytes, size: int, digest: str) -> MediaFacts:
    """Frames, times and audio from the packets, nothing decoded."""
    frames, audio = 0, 0
    first: float | None = None
    last: float | None = None
    with av.open(io.BytesIO(mp4), "r") as c:
        if not c.streams.video:
            return MediaFacts(size, digest, decode_error="no video stream")
        vs = c.streams.video[0]
        a_s = c.streams.audio[0] if c.streams.audio else None
        frame_dur = 1 / float(vs.average_rate or vs.guessed_rate or 30)
        per_packet = ((a_s.codec_context.frame_size if a_s else 0) or AAC_FRAME) if a_s else 0
        for p in c.demux():
            if not p.size:
                continue  # the demuxer's end-of-stream marker
            if p.stream.index == vs.index:
                if p.pts is None or p.time_base is None:
                    return MediaFacts(size, digest, frames, decode_error="frame without timestamp")
                t = float(p.pts * p.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
                frames += 1
            elif a_s is not None and p.stream.index == a_s.index:
                audio += per_packet
    end = None if last is None else last + frame_dur
    return MediaFacts(size, digest, frames, first, end, audio)


def _decoded(mp4: bytes, size: int, digest: str) -> MediaFacts:
    """Frames, times and audio from every decoded picture and sound."""
    frames, audio = 0, 0
    first: float | None = None
    last: float | None = None
    frame_dur = 0.0
    try:
        with av.open(io.BytesIO(mp4), "r") as c:
            if not c.streams.video:
                return MediaFacts(size, digest, decode_error="no video stream")
            vs = c.streams.video[0]
            frame_dur = 1 / float(vs.average_rate or vs.guessed_rate or 30)
            for frame in c.decode(video=0):
                if frame.pts is None or frame.time_base is None:
                    return MediaFacts(size, digest, frames, decode_error="frame without timestamp")
                t = float(frame.pts * frame.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
                frames += 1
        with av.open(io.BytesIO(mp4), "r") as c:
            if c.streams.audio:
                for af in c.decode(audio=0):
                    audio += af.samples
    except (av.FFmpegError, OSError, ValueError) as e:
        return MediaFacts(size, digest, frames, first, None, audio, decode_error=str(e))
    end = None if last is None else last + frame_dur
    return MediaFacts(size, digest, frames, first, end, audio)


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def plain_media(path: Path, agency: PrivateKey | None) -> bytes:
    """The MP4 of a segment file: decrypted with the agency's key if it is encrypted
    (EncryptionError when it is and no key is given, naming the key it needs)."""
    data = path.read_bytes()
    if not is_encrypted(data):
        return data
    if agency is None:
        raise EncryptionError(
            f"{path.name} is encrypted to agency key {data[8:16].hex()}: give the agency's "
            "evidence key to read it"
        )
    return decrypt(data, agency).plain


def decode_frames(
    path: Path, agency: PrivateKey | None = None
) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    """Every video frame of a segment as YUV 4:2:0 pictures (for tests)."""
    with av.open(io.BytesIO(plain_media(path, agency)), "r") as c:
        return [np.asarray(f.to_ndarray(format="yuv420p"), np.uint8) for f in c.decode(video=0)]

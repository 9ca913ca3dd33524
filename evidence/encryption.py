"""Media encrypted to the agency: how a segment file is stored on the device (R7).

A file gets a fresh 32-byte key; the key is sealed to the agency's evidence key (X25519,
libsodium's sealed box) and the media is encrypted with libsodium's secretstream
(XChaCha20-Poly1305), one message per MP4 fragment, so that a file cut by a power loss
keeps every complete fragment, and a message can be neither dropped, reordered nor
altered without the decryption failing. The device forgets the file key when it closes
the file: it cannot read back what it wrote. Layout::

    magic           8 bytes  b"UBENC1\\n\\0"
    agency key id   8 bytes  the first 8 bytes of SHA-256 of the agency's evidence key
    sealed key     80 bytes  crypto_box_seal(file key, agency key)
    stream header  24 bytes  secretstream's
    records        each: >III (ciphertext length, video frames, audio frames: the
                   file's totals at the end of this record, authenticated as the
                   message's additional data), then the ciphertext; the last one is
                   tagged FINAL when the file was closed (not when a power cut ended it)

Without the key, anyone can read the records' framing and counts (what ``verify`` checks
on the device); with it, :func:`decrypt` gives the MP4 back.

Example::

    enc = Encryptor(agency_public)                    # nacl.public.PublicKey
    data = enc.header + enc.record(init, 0, 0) + enc.record(fragment, 30, 47, final=True)
    decrypt(data, agency_private).plain               # init + fragment
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.utils

MAGIC = b"UBENC1\n\0"
SCHEME = "sealedbox-x25519+secretstream-xchacha20poly1305"
_SEALED = 32 + sodium.crypto_box_SEALBYTES
_STREAM = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
HEADER_SIZE = len(MAGIC) + 8 + _SEALED + _STREAM
_RECORD = struct.Struct(">III")
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class EncryptionError(ValueError):
    """An encrypted file that cannot be read: says which part and why."""


def key_id(key: nacl.public.PublicKey) -> str:
    """The agency evidence key's id: 16 hex digits."""
    return hashlib.sha256(bytes(key)).hexdigest()[:16]


def is_encrypted(head: bytes) -> bool:
    return head.startswith(MAGIC)


class Encryptor:
    """Encrypts one file's messages to the agency; holds the file key only until final."""

    def __init__(self, agency: nacl.public.PublicKey) -> None:
        file_key = nacl.utils.random(32)
        self._state: sodium.crypto_secretstream_xchacha20poly1305_state | None = (
            sodium.crypto_secretstream_xchacha20poly1305_state()
        )
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, file_key
        )
        sealed = nacl.public.SealedBox(agency).encrypt(file_key)
        self.header = MAGIC + bytes.fromhex(key_id(agency)) + sealed + stream_header

    def record(
        self, plain: bytes, video_frames: int, audio_frames: int, final: bool = False
    ) -> bytes:
        """One record: ``plain`` encrypted, with the file's frame totals so far."""
        if self._state is None:
            raise EncryptionError("the file was already finished")
        counts = struct.pack(">II", video_frames, audio_frames)
        cipher = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, plain, counts, _FINAL if final else _MESSAGE
        )
        if final:
            self._state = None  # the file key goes with it
        return _RECORD.pack(len(cipher), video_frames, audio_frames) + cipher


@dataclass(frozen=True)
class Framing:
    """What anyone can read of an encrypted file: its agency key id, and its complete
    records' totals. ``end``: bytes of header and complete records; ``size`` the file's."""

    key_id: str
    records: int
    video_frames: int
    audio_frames: int
    end: int
    size: int

    @property
    def complete(self) -> bool:
        return self.end == self.size


def framing(data: bytes) -> Framing:
    """The framing of an encrypted file (EncryptionError if the header is not there)."""
    if not is_encrypted(data):
        raise EncryptionError("not an encrypted media file (no UBENC1 header)")
    if len(data) < HEADER_SIZE:
        raise EncryptionError(f"header cut short: {len(data)} of {HEADER_SIZE} bytes")
    pos, n, video, audio = HEADER_SIZE, 0, 0, 0
    while pos + _RECORD.size <= len(data):
        size, v, a = _RECORD.unpack_from(data, pos)
        if size < _ABYTES or pos + _RECORD.size + size > len(data):
            break
        if v < video or a < audio:
            raise EncryptionError(f"record {n + 1}: frame totals go backwards")
        pos += _RECORD.size + size
        n, video, audio = n + 1, v, a
    return Framing(data[8:16].hex(), n, video, audio, pos, len(data))


@dataclass(frozen=True)
class Decrypted:
    plain: bytes
    final: bool  # the writer closed the file (False: cut short, by a power loss)


def decrypt(data: bytes, agency: nacl.public.PrivateKey) -> Decrypted:
    """The MP4 inside, checked message by message (EncryptionError naming what failed)."""
    f = framing(data)
    if f.key_id != key_id(agency.public_key):
        raise EncryptionError(
            f"encrypted to agency key {f.key_id}, not to this key ({key_id(agency.public_key)})"
        )
    sealed = data[16 : 16 + _SEALED]
    try:
        file_key = nacl.public.SealedBox(agency).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise EncryptionError("the file key does not open with this agency key") from None
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(
        state, data[16 + _SEALED : HEADER_SIZE], file_key
    )
    out, pos, final = [], HEADER_SIZE, False
    for n in range(1, f.records + 1):
        if final:
            raise EncryptionError(f"record {n} follows the final one")
        size, v, a = _RECORD.unpack_from(data, pos)
        cipher = data[pos + _RECORD.size : pos + _RECORD.size + size]
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                state, cipher, struct.pack(">II", v, a)
            )
        except nacl.exceptions.CryptoError:
            raise EncryptionError(f"record {n} does not decrypt: altered or out of place") from None
        out.append(plain)
        final = tag == _FINAL
        pos += _RECORD.size + size
    if not f.complete:
        raise EncryptionError(f"{f.size - f.end} bytes after the last complete record")
    return Decrypted(b"".join(out), final)

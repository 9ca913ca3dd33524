"""A segment sent in chunks: the device's ``blob/init`` and ``blob/finish``, the store's
``missing``, and the chunk arithmetic both sides share; each built and parsed here only,
on the strict :class:`~evidence.messages.Message` base.

Example::

    init = BlobInit(sha256="ab"*32, size=600_000, chunk_size=262_144, seq=17, chunks=(...))
    init.offsets()                         # -> [0, 262144, 524288]
    init.lacking(received={0})             # -> [262144, 524288]
    BlobInit.parse(b'{"sha256":"ab","size":1}')
    # ProtocolError: blob init: 'sha256': not a lowercase hex SHA-256; 'chunk_size' is missing; …
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from evidence import protocol as p
from evidence.messages import REASON_CHARS, Count, Message, validated

MIN_CHUNK = 1024  # smaller chunks are refused (a blob of one chunk may be smaller still)


def _sha256(value: str) -> str:
    if not p.is_sha256(value):
        raise ValueError("not a lowercase hex SHA-256")
    return value


Sha256 = Annotated[str, AfterValidator(_sha256)]


class BlobInit(Message):
    """Announces a blob: its hash, size, chunking, the SHA-256 of each chunk (so a chunk
    altered in transit is refused on arrival, not at the end) and the manifest entry that
    seals the blob (``seq``)."""

    sha256: Sha256
    size: Annotated[int, Field(ge=1, le=2**53)]
    chunk_size: Annotated[int, Field(ge=1, le=p.MAX_CHUNK)]
    seq: Annotated[int, Field(ge=1, le=2**53)]
    # a JSON list on the wire, a tuple here: strict only of its items
    chunks: tuple[Sha256, ...] = Field(strict=False)

    @model_validator(mode="after")
    def _chunked(self) -> BlobInit:
        if self.chunk_size < min(MIN_CHUNK, self.size):
            raise ValueError(f"chunk_size {self.chunk_size} is below {MIN_CHUNK} bytes")
        if len(self.chunks) != len(self.offsets()):
            raise ValueError(f"{len(self.chunks)} chunk hashes for {len(self.offsets())} chunks")
        return self

    @staticmethod
    def parse(payload: bytes) -> BlobInit:
        return validated(BlobInit, p.parse_json(payload, "blob init"), "blob init")

    def offsets(self) -> list[int]:
        """Where each chunk starts."""
        return list(range(0, self.size, self.chunk_size))

    def chunk_length(self, offset: int) -> int:
        """The only length a chunk at ``offset`` may have; ProtocolError if out of range."""
        if offset < 0 or offset >= self.size or offset % self.chunk_size:
            raise p.ProtocolError(
                f"chunk offset {offset} is not a multiple of {self.chunk_size} below {self.size}"
            )
        return min(self.chunk_size, self.size - offset)

    def chunk_hash(self, offset: int) -> str:
        return self.chunks[offset // self.chunk_size]

    def lacking(self, received: set[int]) -> list[int]:
        """Offsets of the chunks not in ``received``, in order."""
        return [o for o in self.offsets() if o not in received]


class BlobFinish(Message):
    """The device sent every chunk the store lacked: assemble the blob and receipt it."""

    sha256: Sha256

    @staticmethod
    def parse(payload: bytes) -> BlobFinish:
        return validated(BlobFinish, p.parse_json(payload, "finish"), "finish")


class Missing(Message):
    """The store's answer to an init or a finish: what it still lacks (empty: complete);
    ``retry``: when to ask again, in seconds (0: at once when offsets are given)."""

    sha256: Sha256
    offsets: list[Count]
    reason: str = Field("", max_length=REASON_CHARS)
    retry: float = Field(0.0, ge=0, le=p.HOUR)

    @staticmethod
    def parse(payload: bytes) -> Missing:
        return validated(Missing, p.parse_json(payload, "missing"), "missing")

"""One blob (a segment's media) on its way to the store, and the steps it takes.

A :class:`Transfer` answers what to send next (:data:`Step`: announce, a chunk, finish, or
the segment whole with its manifest entry) from what the store said it lacks and the time;
the uploader (:mod:`agent.sync`) publishes the step and tells the transfer it went. Kept
apart from :class:`agent.sync_plan.SyncPlan`, which holds the transfers in flight, so the
rules of one blob read on their own.

Example::

    t = Transfer(init, path)
    t.next(now=0.0, quiet=silence.quiet)   # -> AskInit()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evidence.blob_messages import BlobInit, Missing
from evidence.manifest import segment
from evidence.seal import Entry


@dataclass(frozen=True)
class AskInit:
    """Announce the blob (again): the store answers with what it lacks (idempotent)."""


@dataclass(frozen=True)
class SendChunk:
    offset: int
    length: int


@dataclass(frozen=True)
class Finish:
    """Every lacking chunk was sent: ask the store to assemble the blob and receipt it."""


@dataclass(frozen=True)
class SendWhole:
    """The segment and its manifest entry in one message; the store answers with the
    receipt, which acknowledges the entry too."""


Step = AskInit | SendChunk | Finish | SendWhole


@dataclass
class Transfer:
    """One blob on its way. Whole (``entry``: its manifest entry travels with it): send,
    await the receipt. Chunked: announce, send what the store lacks, finish, await the
    receipt. Either way ask again when the store went quiet, or when it said when."""

    init: BlobInit
    file: Path
    entry: Entry | None = None  # set: the segment travels whole, with this entry
    to_send: list[int] = field(default_factory=list)
    answered: bool = False  # the store said what it lacks since we last asked
    finished: bool = False  # finish sent (or nothing to do but wait): awaiting the store
    asked_at: float | None = None  # None: not announced yet
    retry_at: float | None = None  # the store said to ask again then

    @property
    def sha256(self) -> str:
        return self.init.sha256

    def next(self, now: float, quiet: Callable[[float, float], bool]) -> Step | None:
        """The next thing to send (None: wait for the store)."""
        due = self.asked_at is None or quiet(self.asked_at, now)
        due = due or (self.retry_at is not None and now >= self.retry_at)
        if self.entry is not None:
            return SendWhole() if due else None
        waiting = not self.answered or self.finished
        if self.asked_at is None or (waiting and due):
            return AskInit()
        if waiting:
            return None
        if self.to_send:
            offset = self.to_send[0]
            return SendChunk(offset, self.init.chunk_length(offset))
        return Finish()

    def sent(self, step: Step, now: float) -> None:
        """``step`` was published."""
        self.retry_at = None
        if isinstance(step, AskInit):
            self.asked_at, self.answered, self.finished = now, False, False
        elif isinstance(step, SendChunk):
            self.to_send.remove(step.offset)
        else:
            self.finished, self.asked_at = True, now

    def lacks(self, missing: Missing, now: float) -> None:
        """The store's answer. Nothing lacking but a reason (the manifest has not arrived,
        a whole segment altered in transit): ask again after the store's ``retry``;
        nothing lacking and no reason: finish."""
        self.asked_at = now
        if self.entry is not None:
            self.retry_at = now + missing.retry
            return
        self.to_send = list(missing.offsets)
        self.answered = True
        self.finished = not missing.offsets and bool(missing.reason)
        self.retry_at = now + missing.retry if self.finished and missing.retry else None


def whole_init(e: Entry) -> BlobInit:
    """What a segment travelling whole is, in the terms of a chunked one (one chunk)."""
    m = segment(e)
    return BlobInit(sha256=m.sha256, size=m.size, chunk_size=m.size, seq=e.seq, chunks=(m.sha256,))

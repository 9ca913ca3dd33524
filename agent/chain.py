"""The chain writer: the one way anything is sealed on the device.

Segments, events, interruptions, explanations, commands, statements, install and
rotation entries all go through :class:`ChainWriter`, so the write order that makes a
power cut harmless (``docs/architecture.md``) is kept in one place:

1. the segment file is fsynced by its writer (:mod:`agent.media`);
2. :meth:`ChainWriter.place_segment` renames it into ``segments/`` and fsyncs the directory;
3. :meth:`ChainWriter.seal` writes the entry file atomically, then
4. the journal row (:meth:`agent.journal.chain_index.Journal.append`).

On the device a closed segment is sealed on the chain's own thread (``background``), so
the frame loop never waits for those fsyncs: :meth:`ChainWriter.later` queues the work,
and every other seal first waits for what is queued, so the chain's order is the order in
which things were handed over. A statement about what was sealed (a session's close, its
counts) is built there too (:meth:`ChainWriter.seal_when_sealed`).

Example::

    with open_chain(root, key, device_id, clock) as chain:   # an agent command
        chain.seal_body(Install(...))

    chain = ChainWriter(journal, key, device_id, clock)      # the recorder
    chain.seal_body(InterruptionEnd(gap_id, chain.now()), session_id)
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nacl.signing

from agent.journal.chain_index import Journal
from common.files import fsync_dir
from device.clock import Clock
from evidence import signed
from evidence.entries import Body
from evidence.seal import Entry, Moment, Sealer


class ChainWriter:
    """Seals entries onto one device's chain and records them in its journal.

    ``keep_order``: a process other than the recorder (an agent command) may run on a
    monotonic clock behind the chain's last entry (after a reboot, on a simulated chain);
    its entries then take the last entry's monotonic time rather than go backwards."""

    def __init__(
        self,
        journal: Journal,
        key: nacl.signing.SigningKey,
        device_id: str,
        clock: Clock,
        keep_order: bool = False,
        background: bool = False,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self._keep_order = keep_order
        self._last = journal.last()
        self._sealer = Sealer(key, device_id, self._last)
        self._queue: queue.Queue[Callable[[], object]] | None = None
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="sealer", daemon=True)
            self._thread.start()

    def later(self, work: Callable[[], object]) -> None:
        """Run ``work`` (closing and sealing a segment) on the chain's own thread, after
        what was queued before; at once without one. A failure there is raised here, or by
        the next :meth:`drain`, on the caller's thread."""
        self._raise_failure()
        if self._queue is None:
            work()
        else:
            self._queue.put(work)

    def drain(self) -> None:
        """Wait until everything queued is sealed (a no-op on the chain's own thread)."""
        if self._queue is not None and threading.current_thread() is not self._thread:
            self._queue.join()
        self._raise_failure()

    def seal_when_sealed(self, build: Callable[[], Body], session: str | None = None) -> Entry:
        """Seal the body ``build`` makes, on the chain's own thread once everything handed
        over before it is sealed, and wait for it: a statement about what was sealed (a
        session's close and its counts) is made by the thread that sealed it, not from
        what the caller believes is sealed by now."""
        if self._queue is None or threading.current_thread() is self._thread:
            return self.seal_body(build(), session)
        sealed: list[Entry] = []
        self.later(lambda: sealed.append(self.seal_body(build(), session)))
        self.drain()
        if not sealed:  # its failure was raised on another thread that drained first
            raise OSError("the chain's thread failed before this entry was sealed")
        return sealed[0]

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            work = self._queue.get()
            try:
                if self._failure is None:  # after a failure nothing more is sealed here
                    work()
            except BaseException as e:
                self._failure = e
            finally:
                self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None and threading.current_thread() is not self._thread:
            failure, self._failure = self._failure, None
            raise failure

    @property
    def device_id(self) -> str:
        return self._sealer.device_id

    @property
    def head(self) -> tuple[int, str]:
        """The last entry's sequence number and hash."""
        return self._sealer.head

    def sign(self, payload: dict[str, Any]) -> bytes:
        """A signed document by the key in force (a device's answer to an agency command);
        sealed nothing."""
        return signed.sign(self._sealer.signing_key, payload)

    def now(self) -> Moment:
        mono = self.clock.monotonic()
        if self._keep_order and self._last is not None:
            mono = max(mono, float(self._last.payload["at"]["mono"]))
        return Moment(self.clock.wall(), mono, self.clock.synced())

    def seal_body(self, body: Body, session: str | None = None, at: Moment | None = None) -> Entry:
        """Seal a typed body (:mod:`evidence.entries` says which) under its own kind, now
        (or ``at``), and record it: the body is built by its owner, never by hand."""
        self.drain()
        entry = self._sealer.seal(body.KIND, body.to_body(), at or self.now(), session)
        return self._append(entry)

    def rotate(self, new_key: nacl.signing.SigningKey) -> Entry:
        """Hand the chain to ``new_key``: the entry is signed by the current key."""
        self.drain()
        return self._append(self._sealer.rotate(new_key, self.now()))

    def place_segment(self, written: Path, dest: Path) -> None:
        """Move a closed (fsynced) segment file to its place in the evidence directory,
        durably, before its manifest is sealed."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, dest)
        fsync_dir(dest.parent)

    def _append(self, entry: Entry) -> Entry:
        self.journal.append(entry)
        self._last = entry
        return entry


@contextmanager
def open_chain(
    root: Path, key: nacl.signing.SigningKey, device_id: str, clock: Clock
) -> Iterator[ChainWriter]:
    """A chain writer for an agent command (the recorder not running): the journal is
    closed again when the block ends. The caller holds the device lock."""
    journal = Journal(root)
    try:
        yield ChainWriter(journal, key, device_id, clock, keep_order=True)
    finally:
        journal.close()

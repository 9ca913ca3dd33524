"""What the uploader publishes: chain entries, and media whole or in chunks.

The uploader thread (:class:`agent.sync.Uploader`) owns the journal connection and decides
when; a :class:`Sender` reads the journal and the segment files and publishes what the plan
(:class:`agent.sync_plan.SyncPlan`) answers: entries in chain order before (or with) the
media they seal, then media oldest first, a few blobs at a time, within the MQTT window and
the bandwidth cap. Kept apart from the uploader so that what goes on the wire, and in what
order, reads in one place.

Example::

    sender = Sender(root, device_id, link, plan, settings, pacer)
    sender.scan(ledger, now)                 # entries published, transfers started
    for t in list(plan.transfers.values()):
        sender.advance(t, now)               # chunks, finish, or the segment whole
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

from agent import blob_transfer
from agent.journal.sync_ledger import SyncLedger
from agent.sync_plan import Segment, SyncPlan
from agent.sync_timing import Pacer
from agent.uplink import Uplink
from common.settings import Sync
from evidence import protocol as p
from evidence.blob_messages import BlobFinish, BlobInit
from evidence.manifest import segment
from evidence.seal import Entry

PAGE = 4  # entries read from the journal at a time, beyond the places free for media


class Sender:
    """Publishes what the plan says is due, on the uploader thread."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        link: Uplink,
        plan: SyncPlan,
        settings: Sync,
        pacer: Pacer,
    ) -> None:
        self.root = root
        self.device_id = device_id
        self.link = link
        self.plan = plan
        self.settings = settings
        self._pacer = pacer

    def scan(self, ledger: SyncLedger, now: float) -> None:
        # 1. chain entries, in order, before (or with) the media they seal: after the
        # cursor, and those the store left unanswered
        for e in (e for seq in self.plan.quiet_entries(now) if (e := ledger.entry(seq))):
            self.link.publish(p.up(self.device_id, "entry"), e.to_json())
        while True:  # a page at a time, no more than can go now
            places = self.settings.parallel_blobs - len(self.plan.transfers)
            page = ledger.unacked(max(places, 0) + PAGE, self.plan.cursor)
            entries, more = self.plan.entries_to_send(
                page, self.link.room_in_window(), now, self._whole
            )
            for e in entries:
                self.link.publish(p.up(self.device_id, "entry"), e.to_json())
            if more:
                self.plan.scans.wake()  # the rest when the window has room
                return
            if not page or self.plan.cursor < page[-1].seq:
                break  # all read, or waiting for a place
        # 2. media, oldest first, a few blobs at a time
        if len(self.plan.transfers) >= self.settings.parallel_blobs or self.plan.paused(now):
            return
        acked = ledger.unreceipted_segments(self.settings.parallel_blobs * 2, acked=True)
        segments = [Segment.sealed(seq, m) for seq, m in acked]
        for s in self.plan.blobs_to_start(segments, self._present):
            path = self.root / s.file
            entry = ledger.entry(s.seq) if s.size <= self.settings.whole_limit else None
            if entry is not None:
                self.plan.add_whole(entry, path)
                continue
            size = self.settings.chunk_size
            chunks = _chunk_hashes(path, size)
            init = BlobInit(sha256=s.sha256, size=s.size, chunk_size=size, seq=s.seq, chunks=chunks)
            self.plan.add_transfer(init, path)

    def _present(self, s: Segment) -> bool:
        return (self.root / s.file).is_file()

    def _whole(self, e: Entry) -> Path | None:
        """The file of a segment whose media travels whole with its manifest entry."""
        if e.kind != "segment":
            return None
        m = segment(e)
        path = self.root / m.file
        return path if m.size <= self.settings.whole_limit and path.is_file() else None

    def advance(self, t: blob_transfer.Transfer, now: float) -> None:
        with contextlib.ExitStack() as opened:
            f = None
            while (step := t.next(now, self.plan.silence.quiet)) is not None:
                if isinstance(step, blob_transfer.SendWhole):
                    assert t.entry is not None
                    if not self.link.room_in_window():
                        return
                    data = t.file.read_bytes()
                    if not self._pacer.spend(len(data), time.monotonic()):
                        return
                    payload, props = p.whole_segment(t.entry.to_json(), data)
                    self.link.publish(p.up(self.device_id, "segment"), payload, props)
                elif isinstance(step, blob_transfer.AskInit):
                    self.link.publish(p.up(self.device_id, "blob", "init"), t.init.to_bytes())
                elif isinstance(step, blob_transfer.Finish):
                    finish = BlobFinish(sha256=t.sha256).to_bytes()
                    self.link.publish(p.up(self.device_id, "blob", "finish"), finish)
                else:
                    if not self.link.room_in_window():
                        return
                    f = f or opened.enter_context(open(t.file, "rb"))
                    f.seek(step.offset)
                    chunk = f.read(step.length)
                    if not self._pacer.spend(len(chunk), time.monotonic()):
                        return
                    topic = p.up(self.device_id, "blob", t.sha256, str(step.offset))
                    self.link.publish(topic, chunk)
                t.sent(step, now)


def _chunk_hashes(path: Path, chunk_size: int) -> tuple[str, ...]:
    out = []
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            out.append(hashlib.sha256(chunk).hexdigest())
    return tuple(out)

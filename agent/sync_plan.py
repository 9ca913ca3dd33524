"""What the uploader decides, without sockets, threads or disks.

The uploader (:mod:`agent.sync`) feeds these objects facts — what the journal says is
unsent or unreceipted, what arrived from the store, the time — and does what they answer:
publish an entry, ask what a blob lacks, send a chunk, finish, keep a receipt. One blob's
steps are :mod:`agent.blob_transfer`'s, the clocks :mod:`agent.sync_timing`'s, what a reply
means :mod:`agent.sync_replies`'. The rules of the protocol itself (message formats, the
deadline levels) are in :mod:`evidence.protocol` and :mod:`evidence.messages` (the status,
``rejected``, ``resend``).

Example::

    plan = SyncPlan(SyncRules(window=4))
    plan.entries_to_send(unacked, room=4, now=0.0)   # -> (entries to publish, more waiting)
    t = plan.add_transfer(init, path)
    t.next(now=0.0, quiet=plan.silence.quiet)        # -> AskInit()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.blob_transfer import Transfer, whole_init
from agent.sync_timing import ScanSchedule, Silence
from common.settings import Sync
from evidence import protocol as p
from evidence.blob_messages import BlobInit, Missing
from evidence.manifest import SegmentManifest, segment
from evidence.messages import Backlog, Status
from evidence.seal import Entry


@dataclass(frozen=True)
class SyncRules:
    """The numbers the planner decides by (from the device's sync settings)."""

    window: int = 64  # QoS 1 publishes in flight
    parallel_blobs: int = 6  # blobs being transferred at once
    retry_seconds: float = 10.0  # re-ask the store when it has not answered
    whole_limit: int = p.WHOLE_LIMIT  # a segment up to this size travels in one message


def rules(s: Sync) -> SyncRules:
    """The planner's numbers, from the device's sync settings."""
    return SyncRules(s.window, s.parallel_blobs, s.retry_seconds, s.whole_limit)


# -- what the uploader needs from a segment manifest -------------------------------------


@dataclass(frozen=True)
class Segment:
    """A sealed segment whose media is to be stored at the agency.

    Example::

        Segment.sealed(7, manifest)   # manifest: the journal's SegmentManifest
        # -> Segment(seq=7, sha256=..., size=..., file='segments/...', end_wall=...)
    """

    seq: int  # the manifest entry that seals the media
    sha256: str
    size: int
    file: str  # relative to the evidence directory
    end_wall: float  # the recording's end: its 24-hour deadline runs from here

    @staticmethod
    def sealed(seq: int, m: SegmentManifest) -> Segment:
        """What the uploader needs of the manifest sealed at ``seq``."""
        return Segment(seq, m.sha256, m.size, m.file, m.end.wall)


def backlog(unacked_entries: int, unreceipted: Sequence[Segment]) -> Backlog:
    """What is left to send, as the status document reports it."""
    return Backlog(
        entries=unacked_entries,
        blobs=len(unreceipted),
        bytes=sum(s.size for s in unreceipted),
        oldest_unsynced_end=min((s.end_wall for s in unreceipted), default=None),
    )


def status(
    device: str,
    online: bool,
    backlog: Backlog,
    wall: float,
    warn_hours: tuple[float, float],
    extra: dict[str, Any],
) -> Status:
    """The retained status: backlog, the age of the oldest unreceipted recording and its
    24-hour deadline level (R7); ``extra`` (the recorder's state) only when online,
    without the fields the status itself says."""
    oldest = backlog.oldest_unsynced_end
    recorder = {k: v for k, v in extra.items() if k not in Status.model_fields} if online else {}
    return Status(
        device=device,
        online=online,
        backlog=backlog,
        oldest_unsynced_age=None if oldest is None else round(wall - oldest, 1),
        deadline=p.deadline_level(wall, oldest, warn_hours),
        recorder=recorder,
    )


def retention_cutoff(now: float, keep_hours: float | None) -> float | None:
    """Receipts at or before this time allow deleting the local media (None: keep all)."""
    return None if keep_hours is None else now - keep_hours * 3600


class SyncPlan:
    """What is in flight, and what to send next. Nothing is assumed delivered across a
    reconnect: ``reset`` forgets it all, and the journal says again what is unsent."""

    def __init__(self, rules: SyncRules) -> None:
        self.rules = rules
        self.silence = Silence(rules.retry_seconds)
        self.scans = ScanSchedule()
        self.transfers: dict[str, Transfer] = {}
        self.sent_entries: dict[int, float] = {}  # seq -> when it was last published
        self.paused_until = 0.0  # media waits until then: the store asked us to back off
        # The last entry sent (alone or with its media): the journal is read after it,
        # not from the start, every time something was acknowledged.
        self.cursor = 0

    def reset(self) -> None:
        self.transfers.clear()
        self.sent_entries.clear()
        self.cursor = 0

    def refused(self, code: str, now: float) -> bool:
        """The store refused something with ``code``: whether media now waits (quota, a
        full disk), rather than being resent into the same refusal."""
        wait = p.BACK_OFF.get(code)
        if wait is None:
            return False
        self.paused_until = max(self.paused_until, now + wait)
        return True

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def heard(self, now: float) -> None:
        """Anything from the store: it is alive, and an ack or a receipt frees a place."""
        self.silence.heard(now)
        self.scans.wake()

    def waiting_on_quiet_store(self, now: float) -> bool:
        return bool(self.sent_entries) and self.silence.quiet(0.0, now)

    def entries_to_send(
        self,
        unacked: Iterable[Entry],
        room: int,
        now: float,
        whole: Callable[[Entry], Path | None] = lambda _e: None,
    ) -> tuple[list[Entry], bool]:
        """Chain entries to publish alone, in chain order, at most ``room`` of them; and
        whether more wait for the window to have room. ``unacked``: the journal's entries
        not acknowledged after :attr:`cursor`, which moves past each one handed out. A
        segment manifest whose media can travel whole (``whole`` gives its file) goes with
        it instead, as a transfer; when no transfer has a place it waits, and the entries
        after it with it (a receipt frees a place). Entries sent alone that the store left
        unanswered are :meth:`quiet_entries`."""
        out: list[Entry] = []
        for e in unacked:
            if e.seq <= self.cursor or e.seq in self.sent_entries:
                continue
            file = whole(e) if not self.paused(now) else None
            if file is not None:
                if segment(e).sha256 not in self.transfers:
                    if len(self.transfers) >= self.rules.parallel_blobs:
                        return out, False
                    self.add_whole(e, file)
            else:
                if len(out) >= room:
                    return out, True
                out.append(e)
                self.sent_entries[e.seq] = now
            self.cursor = e.seq
        return out, False

    def quiet_entries(self, now: float) -> list[int]:
        """Entries sent alone that the store has not answered while it went quiet: to send
        again (and when they are, they count as sent now)."""
        due = [seq for seq, at in self.sent_entries.items() if self.silence.quiet(at, now)]
        for seq in due:
            self.sent_entries[seq] = now
        return sorted(due)

    def answered(self, seq: int, ok: bool = True) -> None:
        """The store acknowledged or refused entry ``seq``: a refused manifest's media
        is not sent with it any more."""
        self.sent_entries.pop(seq, None)
        if not ok:
            for sha in [s for s, t in self.transfers.items() if t.init.seq == seq]:
                del self.transfers[sha]

    def blobs_to_start(
        self, unreceipted: Iterable[Segment], present: Callable[[Segment], bool]
    ) -> list[Segment]:
        """Media to start sending, oldest first, so that at most ``parallel_blobs`` are in
        transfer; ``present`` says whether the segment's file is still on the device."""
        room = self.rules.parallel_blobs - len(self.transfers)
        out: dict[str, Segment] = {}
        for s in unreceipted:
            if len(out) >= room:
                break
            if s.sha256 not in self.transfers and s.sha256 not in out and present(s):
                out[s.sha256] = s
        return list(out.values())

    def add_transfer(self, init: BlobInit, file: Path, entry: Entry | None = None) -> Transfer:
        t = self.transfers[init.sha256] = Transfer(init, file, entry)
        return t

    def add_whole(self, e: Entry, file: Path) -> Transfer:
        """A segment that travels whole with its manifest entry ``e``."""
        return self.add_transfer(whole_init(e), file, e)

    def lacks(self, missing: Missing, now: float) -> None:
        t = self.transfers.get(missing.sha256)
        if t:
            t.lacks(missing, now)

    def receipted(self, sha256: str) -> None:
        self.transfers.pop(sha256, None)

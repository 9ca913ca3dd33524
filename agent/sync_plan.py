"""What the uploader decides, without sockets, threads or disks.

The uploader (:mod:`agent.sync`) feeds these objects facts — what the journal says is
unsent or unreceipted, what arrived from the store, the time — and does what they answer:
publish an entry, ask what a blob lacks, send a chunk, finish, keep a receipt. The rules of
the protocol itself (message formats, the deadline levels) are in :mod:`evidence.protocol`
and :mod:`evidence.messages` (the status, ``rejected``, ``resend``).

Example::

    plan = SyncPlan(SyncRules(window=4))
    plan.entries_to_send(unacked, room=4, now=0.0)   # -> (entries to publish, more waiting)
    t = plan.add_transfer(init, path)
    t.next(now=0.0, quiet=plan.silence.quiet)        # -> AskInit()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing

from common.settings import Sync
from evidence import protocol as p
from evidence.messages import Backlog, Rejected, Resend, Status
from evidence.receipt import ReceiptClaim, check_receipt
from evidence.seal import Entry

SCAN_SECONDS = 0.1  # how often the journal is read for newly sealed entries
PANEL_REPEAT = 5.0  # seconds between repeats of a room panel's state


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
    """A sealed segment whose media is to be stored at the agency."""

    seq: int  # the manifest entry that seals the media
    sha256: str
    size: int
    file: str  # relative to the evidence directory
    end_wall: float  # the recording's end: its 24-hour deadline runs from here


def segment(seq: int, manifest: dict[str, Any]) -> Segment:
    """The one place the uploader reads a segment manifest (an entry's body).

    Example::

        segment(7, {"sha256": h, "size": 10, "file": "s/1.mp4", "end": {"wall": 5.0}, ...})
        # -> Segment(seq=7, sha256=h, size=10, file='s/1.mp4', end_wall=5.0)
    """
    return Segment(
        seq=seq,
        sha256=str(manifest["sha256"]),
        size=int(manifest["size"]),
        file=str(manifest["file"]),
        end_wall=float(manifest["end"]["wall"]),
    )


def backlog(unacked_entries: int, unreceipted: Sequence[Segment]) -> dict[str, Any]:
    """What is left to send, as the status document reports it."""
    return Backlog(
        entries=unacked_entries,
        blobs=len(unreceipted),
        bytes=sum(s.size for s in unreceipted),
        oldest_unsynced_end=min((s.end_wall for s in unreceipted), default=None),
    ).model_dump()


def status_doc(
    device: str,
    online: bool,
    backlog: dict[str, Any],
    wall: float,
    warn_hours: tuple[float, float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The retained status (:class:`evidence.messages.Status`): backlog, the age of the
    oldest unreceipted recording and its 24-hour deadline level (R7); ``extra`` (the
    recorder's state) only when online, without the fields the status itself says."""
    oldest = backlog["oldest_unsynced_end"]
    recorder = {k: v for k, v in extra.items() if k not in Status.model_fields} if online else {}
    return Status(
        device=device,
        online=online,
        backlog=Backlog.model_validate(backlog),
        oldest_unsynced_age=None if oldest is None else round(wall - oldest, 1),
        deadline=p.deadline_level(wall, oldest, warn_hours),
        recorder=recorder,
    ).to_doc()


def retention_cutoff(now: float, keep_hours: float | None) -> float | None:
    """Receipts at or before this time allow deleting the local media (None: keep all)."""
    return None if keep_hours is None else now - keep_hours * 3600


# -- what a reply means ------------------------------------------------------------------


@dataclass(frozen=True)
class CommandArrived:
    """An agency command, handed on unverified: the recorder checks and applies it."""

    payload: bytes


@dataclass(frozen=True)
class Receipt:
    """A receipt that verified with the agency key and is well-formed. Whether it is about
    footage this device sealed is :func:`receipt_refusal`'s question."""

    claim: ReceiptClaim
    data: bytes

    @property
    def sha256(self) -> str:
        return self.claim.sha256

    @property
    def seq(self) -> int:
        return self.claim.entry_seq


@dataclass(frozen=True)
class Sealed:
    """What the device's own journal holds at a sequence number: a segment's seal."""

    sha256: str
    size: int
    entry_hash: str


def receipt_refusal(claim: ReceiptClaim, sealed: Sealed | None) -> str | None:
    """Why a receipt must not free any footage (None: it names exactly what this device
    sealed at ``entry_seq``). A receipt frees only what the journal says it sealed.

    Example::

        receipt_refusal(claim, Sealed(claim.sha256, claim.size, claim.entry_hash))  # None
        receipt_refusal(claim, None)  # 'entry 8 is not a sealed segment on this device'
    """
    if sealed is None:
        return f"entry {claim.entry_seq} is not a sealed segment on this device"
    for name, mine in (
        ("sha256", sealed.sha256),
        ("size", sealed.size),
        ("entry_hash", sealed.entry_hash),
    ):
        if getattr(claim, name) != mine:
            return f"its {name} is not the one sealed at entry {claim.entry_seq}"
    return None


Reply = CommandArrived | p.Ack | p.Missing | Receipt | Rejected | Resend | None


def is_panel_input(topic: str, room: str | None) -> bool:
    """Whether a message is the room panel's (door, key): the recorder decides those."""
    return room is not None and topic.startswith(p.panel(room, ""))


def read_reply(
    device: str, topic: str, payload: bytes, agency_key: nacl.signing.VerifyKey
) -> Reply:
    """What a message from the store or the agency means (None: nothing we know).
    ProtocolError or ReceiptError for a malformed one."""
    if topic.startswith(p.command(device, "")):
        return CommandArrived(payload)
    what = topic.rsplit("/", 1)[-1]
    if what == "ack":
        return p.Ack.parse(payload)
    if what == "missing":
        return p.Missing.parse(payload)
    if what == "receipt":
        receipt = check_receipt(payload, agency_key, device=device)
        return Receipt(ReceiptClaim.of(receipt), payload)
    if what == "rejected":
        return Rejected.parse(payload)
    if what == "resend":
        return Resend.parse(payload)
    return None


# -- when to send ------------------------------------------------------------------------


@dataclass
class Silence:
    """Whether the store has said nothing for ``retry_seconds``: then ask again. While it
    answers anything it is busy, not deaf: resending would only add to its queue."""

    retry_seconds: float
    last_reply: float = 0.0

    def heard(self, now: float) -> None:
        self.last_reply = now

    def quiet(self, since: float, now: float) -> bool:
        return now - max(since, self.last_reply) > self.retry_seconds


@dataclass
class Pacer:
    """Token bucket for the optional bandwidth cap (bytes per second; None: no cap).
    A chunk larger than the bucket goes once the bucket is full."""

    bandwidth: int | None
    tokens: float = 0.0
    at: float = 0.0

    def spend(self, n: int, now: float) -> bool:
        cap = self.bandwidth
        if cap is None:
            return True
        self.tokens = min(float(cap), self.tokens + (now - self.at) * cap)
        self.at = now
        if self.tokens < n and self.tokens < cap:
            return False
        self.tokens -= n
        return True


@dataclass
class Every:
    """A repeating deadline: ``due`` answers True at most once every ``seconds``."""

    seconds: float
    last: float = 0.0

    def due(self, now: float, force: bool = False) -> bool:
        if not force and now - self.last < self.seconds:
            return False
        self.last = now
        return True


@dataclass
class ScanSchedule:
    """When to read the journal for what to send. Reading it is the costly part: do it
    when something was acknowledged or receipted (``wake``), or when a glance at the newest
    sequence number, at most every SCAN_SECONDS, shows news (the recorder seals on its own
    thread), or sent entries wait for a store gone quiet."""

    rescan: bool = True
    next_glance: float = 0.0
    head: int = 0  # the newest entry seen

    def wake(self) -> None:
        self.rescan = True

    def glance_due(self, now: float) -> bool:
        if self.rescan or now < self.next_glance:
            return False
        self.next_glance = now + SCAN_SECONDS
        return True

    def glanced(self, head: int, waiting: bool) -> None:
        self.rescan = head != self.head or waiting
        self.head = head

    def take(self) -> bool:
        """Whether to scan now (and the wish is then used up)."""
        due, self.rescan = self.rescan, False
        return due


@dataclass
class PanelEcho:
    """What the room panel shows, sent on change and repeated every PANEL_REPEAT seconds:
    a panel stops believing a state not repeated, so a controller that died does not leave
    the RECORDING lamp lit."""

    state: str | None = None  # the last state shown; resent on reconnect
    sent_at: float = 0.0

    def show(self, state: str, now: float, connected: bool) -> bool:
        """Whether to publish ``state`` now."""
        if state == self.state and now - self.sent_at < PANEL_REPEAT:
            return False
        self.state = state
        if not connected:
            return False
        self.sent_at = now
        return True


# -- blob transfers ----------------------------------------------------------------------


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

    init: p.BlobInit
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
            return SendChunk(offset, p.chunk_length(self.init, offset))
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

    def lacks(self, missing: p.Missing, now: float) -> None:
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


def whole_init(e: Entry) -> p.BlobInit:
    """What a segment travelling whole is, in the terms of a chunked one (one chunk)."""
    sha, size = str(e.body["sha256"]), int(e.body["size"])
    return p.BlobInit(sha, size, size, e.seq, (sha,))


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
                if str(e.body["sha256"]) not in self.transfers:
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

    def add_transfer(self, init: p.BlobInit, file: Path, entry: Entry | None = None) -> Transfer:
        t = self.transfers[init.sha256] = Transfer(init, file, entry)
        return t

    def add_whole(self, e: Entry, file: Path) -> Transfer:
        """A segment that travels whole with its manifest entry ``e``."""
        return self.add_transfer(whole_init(e), file, e)

    def lacks(self, missing: p.Missing, now: float) -> None:
        t = self.transfers.get(missing.sha256)
        if t:
            t.lacks(missing, now)

    def receipted(self, sha256: str) -> None:
        self.transfers.pop(sha256, None)

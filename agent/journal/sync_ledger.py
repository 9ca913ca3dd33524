"""The uploader's view of the journal (``journal.db``): what the store acknowledged,
refused and receipted, beside the entries, so that it survives restarts and outages. The
uploader decides (:mod:`agent.sync_plan`); this only stores and answers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from evidence import manifest
from evidence.manifest import SegmentManifest
from evidence.seal import Entry

log = logging.getLogger(__name__)
_PAGE = 200  # manifests checked against the receipts at a time (SQLite: 999 parameters)


# -- what the uploader asks --------------------------------------------------------------
# Transfer state (what the store acknowledged, refused and receipted) lives here, beside the
# entries, so that it survives restarts and outages. The uploader decides; this only stores.


class SyncLedger:
    """The uploader's view of ``journal.db`` (its own connection, WAL; one thread), which
    the panel's page reads too (:mod:`simulator.journal_view`).

    Segment manifests come as their type (:class:`evidence.manifest.SegmentManifest`,
    ManifestError naming the entry if one does not read): nothing here decodes them by hand.

    Example::

        ledger = SyncLedger(root)
        ledger.unacked(64)              # [Entry(seq=1, ...), ...] oldest first
        ledger.unreceipted_segments()   # [(7, SegmentManifest(sha256=..., ...)), ...]
        ledger.close()
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = sqlite3.connect(root / "journal.db", check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        with self.db:
            self.db.execute("create table if not exists sync_acks (seq integer primary key)")
            self.db.execute(
                "create table if not exists sync_refused (seq integer primary key, reason text,"
                " at real not null default 0)"
            )
            # The receipts themselves are kept here (verifiable, never deleted).
            self.db.execute(
                "create table if not exists receipts (sha256 text primary key, seq integer,"
                " received real, deleted real, receipt text)"
            )
            columns = {r[1] for r in self.db.execute("pragma table_info(receipts)")}
            if "receipt" not in columns:  # a journal from before receipts were kept here
                self.db.execute("alter table receipts add column receipt text")
            columns = {r[1] for r in self.db.execute("pragma table_info(sync_refused)")}
            if "at" not in columns:  # from when a refusal was for good: retried now
                self.db.execute("alter table sync_refused add column at real not null default 0")
        self._batch = 0
        self._waiting: dict[int, SegmentManifest] = {}  # unreceipted manifests, by seq

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Acks and receipts within commit together, once (one fsync for many replies)."""
        self._batch += 1
        try:
            yield
        finally:
            self._batch -= 1
            if not self._batch:
                self.db.commit()

    def _commit(self) -> None:
        if not self._batch:
            self.db.commit()

    def head(self) -> int:
        """The newest entry's sequence number (0: none yet)."""
        return int(self.db.execute("select coalesce(max(seq), 0) from entries").fetchone()[0])

    def entry(self, seq: int) -> Entry | None:
        row = self.db.execute("select entry from entries where seq = ?", (seq,)).fetchone()
        return None if row is None else Entry.from_json(row["entry"].encode())

    def unacked(self, limit: int, after: int = 0) -> list[Entry]:
        """Entries the store has neither acknowledged nor refused, in chain order, after
        sequence number ``after``."""
        rows = self.db.execute(
            "select entry from entries where seq > ? and seq not in (select seq from sync_acks)"
            " and seq not in (select seq from sync_refused) order by seq limit ?",
            (after, limit),
        ).fetchall()
        return [Entry.from_json(r["entry"].encode()) for r in rows]

    def unacked_count(self) -> int:
        """Entries not acknowledged (refused ones included: they are not at the store)."""
        sql = "select count(*) from entries where seq not in (select seq from sync_acks)"
        return int(self.db.execute(sql).fetchone()[0])

    def unreceipted_count(self) -> int:
        """How many sealed segments have no receipt."""
        return sum(1 for _ in self._unreceipted(acked=False))

    def unreceipted_segments(
        self, limit: int = -1, acked: bool = False
    ) -> list[tuple[int, SegmentManifest]]:
        """(seq, manifest) of sealed segments whose media has no receipt, oldest first
        (refused ones too: nothing of theirs is at the agency, so they stay in the backlog
        and its deadline); ``acked``: only those the store acknowledged; at most ``limit``."""
        return list(itertools.islice(self._unreceipted(acked), None if limit < 0 else limit))

    def _unreceipted(self, acked: bool) -> Iterator[tuple[int, SegmentManifest]]:
        """Segments without a receipt. A receipt is kept only for the entry sealing its
        media (:meth:`sealed`); one naming the same bytes (sealed twice: the store keeps
        media by hash) counts too. Each manifest is read once while it waits: the backlog
        is asked for every few seconds, for as long as the device is offline."""
        only_acked = " and seq in (select seq from sync_acks)" if acked else ""
        seqs = [
            int(r[0])
            for r in self.db.execute(
                "select seq from entries where kind = 'segment'"
                " and seq not in (select seq from receipts where seq is not null)"
                f"{only_acked} order by seq"
            )
        ]
        for start in range(0, len(seqs), _PAGE):
            page = [(seq, self._manifest(seq)) for seq in seqs[start : start + _PAGE]]
            shas = [m.sha256 for _, m in page]
            marks = ",".join("?" * len(shas))
            sql = f"select sha256 from receipts where sha256 in ({marks})"
            held = {r[0] for r in self.db.execute(sql, shas)}
            yield from ((seq, m) for seq, m in page if m.sha256 not in held)
        if not acked:  # a whole pass: what no longer waits is forgotten
            self._waiting = {seq: self._waiting[seq] for seq in seqs}

    def _manifest(self, seq: int) -> SegmentManifest:
        if (m := self._waiting.get(seq)) is None:
            row = self.db.execute("select entry from entries where seq = ?", (seq,)).fetchone()
            m = self._waiting[seq] = manifest.segment(Entry.from_json(row["entry"].encode()))
        return m

    def sealed(self, seq: int) -> tuple[str, SegmentManifest] | None:
        """(entry hash, manifest) of the segment this device sealed at ``seq``; None if the
        entry at ``seq`` is not a segment (or there is none)."""
        row = self.db.execute(
            "select hash, entry from entries where seq = ? and kind = 'segment'", (seq,)
        ).fetchone()
        entry = None if row is None else Entry.from_json(row["entry"].encode())
        return None if entry is None else (entry.hash, manifest.segment(entry))

    def ack(self, seq: int) -> None:
        self.db.execute("insert or ignore into sync_acks values (?)", (seq,))
        self._commit()

    def refused(self, seq: int, reason: str, now: float) -> None:
        """The store refused entry ``seq`` (a signed ack): not sent again until
        :meth:`retry_refused`; it stays in the backlog and its deadline."""
        self.db.execute(
            "insert or replace into sync_refused (seq, reason, at) values (?, ?, ?)",
            (seq, reason, now),
        )
        self._commit()

    def retry_refused(self, before: float) -> int:
        """Send again the entries refused before ``before``: a refusal may be the store's
        mistake or passing state, and only the agency's signed word takes footage off the
        backlog. How many."""
        n = self.db.execute("delete from sync_refused where at < ?", (before,)).rowcount
        self._commit()
        return int(n)

    def receipt(self, sha256: str, seq: int, data: bytes, now: float) -> None:
        """Keep a verified receipt."""
        self.db.execute(
            "insert or ignore into receipts values (?, ?, ?, null, ?)",
            (sha256, seq, now, data.decode()),
        )
        self._commit()

    def receipted_before(self, received: float) -> list[tuple[str, SegmentManifest]]:
        """(sha256, manifest) of receipted media still on the device, receipted at or
        before ``received``."""
        rows = self.db.execute(
            "select r.sha256, e.entry from receipts r join entries e on e.seq = r.seq"
            " where r.deleted is null and r.received <= ?",
            (received,),
        ).fetchall()
        return [
            (str(r["sha256"]), manifest.segment(Entry.from_json(r["entry"].encode()))) for r in rows
        ]

    def receipt_lags(self) -> list[float]:
        """For each receipt kept: seconds from its segment's sealing (the entry's wall
        time) to the receipt's arrival."""
        sql = "select r.received - e.wall from receipts r join entries e on e.seq = r.seq"
        return [float(r[0]) for r in self.db.execute(sql)]

    # -- what the panel's page reads ------------------------------------------------

    def sealed_counts(self) -> tuple[int, int]:
        """Segments sealed, and entries in all."""
        sql = "select count(*), coalesce(sum(kind = 'segment'), 0) from entries"
        total, segments = self.db.execute(sql).fetchone()
        return int(segments), int(total)

    def newest(self, limit: int) -> list[Entry]:
        """The newest ``limit`` entries, newest first."""
        sql = "select entry from entries order by seq desc limit ?"
        return [Entry.from_json(r["entry"].encode()) for r in self.db.execute(sql, (limit,))]

    def deleted(self, sha256: str, now: float) -> None:
        self.db.execute("update receipts set deleted = ? where sha256 = ?", (now, sha256))
        self._commit()

    def close(self) -> None:
        self.db.close()


def sync_counts(root: Path) -> dict[str, int]:
    """Segments sealed, receipted, and entries not yet acknowledged, read from the device's
    journal without writing it (zeros for what it does not hold yet): what the tester's
    control channel tells of the uploads, from a thread of its own."""
    out = {"segments": 0, "receipted": 0, "unacked": 0}
    try:
        db = sqlite3.connect(f"file:{root / 'journal.db'}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return out
    try:
        out["segments"] = db.execute(
            "select count(*) from entries where kind = 'segment'"
        ).fetchone()[0]
        with contextlib.suppress(sqlite3.Error):
            out["receipted"] = db.execute("select count(*) from receipts").fetchone()[0]
            out["unacked"] = db.execute(
                "select count(*) from entries where seq not in (select seq from sync_acks)"
            ).fetchone()[0]
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return out

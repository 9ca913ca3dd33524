"""The device journal: every sealed entry, as a file and as a row in SQLite (WAL).

Write order is what makes a power cut harmless: the media file is fsynced before its
manifest is sealed; the entry file is written atomically (temp, fsync, rename) before the
database row; and on open, entry files the database has not seen are imported. At every
instant the files are a valid chain prefix and the database can be rebuilt from them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from common.archive.device_directory import load_chain
from common.files import write_atomic
from evidence import manifest
from evidence.body_fields import ManifestError
from evidence.entries import Assignment, Event
from evidence.layout import CHAIN, entry_name
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.session_bodies import Interruption, InterruptionEnd, SessionClose, SessionOpen

log = logging.getLogger(__name__)
T = TypeVar("T")
_PAGE = 200  # manifests checked against the receipts at a time (SQLite: 999 parameters)


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / CHAIN).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one connection, used by the recorder and the sealer
        conn = sqlite3.connect(root / "journal.db", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.db = sqlite_utils.Database(conn)
        self._entries = self.db.table("entries")
        if not self._entries.exists():
            self._entries.create(
                {
                    "seq": int,
                    "hash": str,
                    "kind": str,
                    "session": str,
                    "file": str,
                    "wall": float,
                    "entry": str,
                },
                pk="seq",
            )
            self._entries.create_index(["session"])
        # Made now, not at the first command: a schema change while the uploader's
        # connection writes can find the database locked.
        self.db.execute(
            "create table if not exists applied_commands (nonce text primary key,"
            " command text, issued real, expires real, applied real, seq integer)"
        )
        self._import_orphans()

    def append(self, entry: Entry) -> None:
        write_atomic(self.root / entry_name(entry.seq), entry.to_json())
        self._insert(entry)

    def last(self) -> Entry | None:
        rows = self._rows("select entry from entries order by seq desc limit 1")
        return Entry.from_json(rows[0]["entry"].encode()) if rows else None

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        where, args = ("where kind = ?", [kind]) if kind else ("", [])
        for row in self._rows(f"select entry from entries {where} order by seq", args):
            yield Entry.from_json(row["entry"].encode())

    def bodies(self, kind: str, owner: Callable[[object], T]) -> Iterator[tuple[Entry, T]]:
        """The entries of ``kind``, in chain order, each with its body as ``owner`` reads
        it. One that does not read is said in the log (the entry, its kind, the field) and
        passed over: what the recorder asks of its chain goes on (a command, a boot)."""
        for e in self.entries(kind):
            if (body := _read(e, owner)) is not None:
                yield e, body

    def last_body(self, kind: str, owner: Callable[[object], T]) -> T | None:
        """The newest entry of ``kind``'s body as ``owner`` reads it (None: there is none,
        or it does not read, which the log says)."""
        rows = self._rows(
            "select entry from entries where kind = ? order by seq desc limit 1", [kind]
        )
        return _read(Entry.from_json(rows[0]["entry"].encode()), owner) if rows else None

    # -- what recovery asks: a session the last boot left open ------------------------

    def session_left_open(self) -> Entry | None:
        """The session_open entry of a session the last boot left open (power cut or
        battery shutdown), if any."""
        rows = self._rows(
            "select kind, entry from entries where kind in ('session_open', 'session_close')"
            " order by seq desc limit 1"
        )
        if rows and rows[0]["kind"] == "session_open":
            return Entry.from_json(rows[0]["entry"].encode())
        return None

    def segments(self, session: str) -> list[SegmentManifest]:
        """The manifests sealed for ``session``, in chain order."""
        rows = self._rows(
            "select entry from entries where kind = 'segment' and session = ? order by seq",
            [session],
        )
        return [manifest.segment(Entry.from_json(r["entry"].encode())) for r in rows]

    def interruption(self, gap: str) -> tuple[Interruption, str | None] | None:
        """Interruption ``gap`` and the session it belongs to, if the chain has it."""
        for e, found in self.bodies(Interruption.KIND, Interruption.from_body):
            if found.id == gap:
                return found, e.session
        return None

    def open_interruption(self, session: str) -> str | None:
        """An interruption of ``session`` sealed without an end and never ended."""
        ended = {end.id for _, end in self.bodies(InterruptionEnd.KIND, InterruptionEnd.from_body)}
        for e, gap in self.bodies(Interruption.KIND, Interruption.from_body):
            if e.session == session and gap.end is None and gap.id not in ended:
                return gap.id
        return None

    # -- agency commands: each applied once -------------------------------------------

    def command_applied(self, nonce: str) -> bool:
        """Whether the agency command ``nonce`` was applied (remembered, or sealed just
        before a power cut: the chain is the record)."""
        if self._rows("select 1 from applied_commands where nonce = ?", [nonce]):
            return True
        if any(a.nonce == nonce for _, a in self.bodies(Assignment.KIND, Assignment.from_body)):
            return True
        cases = [b.case for _, b in self.bodies(SessionOpen.KIND, SessionOpen.from_body)]
        cases += [b.case for _, b in self.bodies(SessionClose.KIND, SessionClose.from_body)]
        cases += [b.case_command for _, b in self.bodies(Event.KIND, Event.from_body)]
        return any(c is not None and c.nonce == nonce for c in cases)

    def applied_command_seq(self, nonce: str) -> int | None:
        """The entry sealed for the agency command ``nonce`` when it was applied (None:
        not remembered, e.g. sealed just before a power cut)."""
        rows = self._rows("select seq from applied_commands where nonce = ?", [nonce])
        return int(rows[0]["seq"]) if rows and rows[0]["seq"] is not None else None

    def remember_command(
        self, nonce: str, command: str, issued: float, expires: float, applied: float, seq: int
    ) -> None:
        row = dict(nonce=nonce, command=command, issued=issued, expires=expires)
        row |= dict(applied=applied, seq=seq)
        with self._lock, self.db.conn:
            self.db.table("applied_commands").insert(row, pk="nonce", replace=True)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        """A query's rows, read whole under the lock: the recorder's thread reads while
        the chain's own thread seals, on one connection (sqlite_utils' savepoints would
        interleave)."""
        with self._lock:
            return list(self.db.query(sql, args or []))

    def _insert(self, entry: Entry) -> None:
        """One statement, one commit: the row as the table is created above."""
        row = (
            entry.seq,
            entry.hash,
            entry.kind,
            entry.session,
            _segment_file(entry),
            entry.payload["at"]["wall"],
            entry.to_json().decode(),
        )
        with self._lock, self.db.conn:
            self.db.conn.execute(
                "insert or replace into entries (seq, hash, kind, session, file, wall, entry)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def _import_orphans(self) -> None:
        """Entries written to file but not to the database before a power cut."""
        known = {r["seq"] for r in self._rows("select seq from entries")}
        for _, e in load_chain(self.root):
            if isinstance(e, Entry) and e.seq not in known:
                self._insert(e)


def _read(e: Entry, owner: Callable[[object], T]) -> T | None:
    """``e``'s body as ``owner`` reads it; None if it does not, which the log says."""
    try:
        return owner(e.body)
    except ManifestError as err:
        log.error("journal: entry %d does not read, passed over: %s", e.seq, err)
        return None


def _segment_file(entry: Entry) -> str | None:
    """The ``file`` column: the file a segment entry seals (None: another kind, or a
    manifest that does not read, a chain file altered on the disk). It only indexes the
    row, which keeps the entry whole."""
    if entry.kind != SegmentManifest.KIND:
        return None
    m = _read(entry, SegmentManifest.from_body)
    return None if m is None else m.file


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

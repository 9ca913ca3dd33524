"""The device journal: every sealed entry, as a file and as a row in SQLite (WAL).

Write order is what makes a power cut harmless: the media file is fsynced before its
manifest is sealed; the entry file is written atomically (temp, fsync, rename) before the
database row; and on open, entry files the database has not seen are imported. At every
instant the files are a valid chain prefix and the database can be rebuilt from them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from common.archive.device_directory import load_chain
from common.files import write_atomic
from evidence import manifest
from evidence.layout import CHAIN, entry_name
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.session_bodies import Interruption, InterruptionEnd


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

    def last_of(self, kind: str) -> Entry | None:
        """The newest entry of ``kind``, if any."""
        rows = self._rows(
            "select entry from entries where kind = ? order by seq desc limit 1", [kind]
        )
        return Entry.from_json(rows[0]["entry"].encode()) if rows else None

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
        for e in self.entries("interruption"):
            if e.body.get("id") == gap:
                return Interruption.from_body(e.body), e.session
        return None

    def open_interruption(self, session: str) -> str | None:
        """An interruption of ``session`` sealed without an end and never ended."""
        ended = {InterruptionEnd.from_body(e.body).id for e in self.entries("interruption_end")}
        for e in self.entries("interruption"):
            gap = Interruption.from_body(e.body)
            if e.session == session and gap.end is None and gap.id not in ended:
                return gap.id
        return None

    # -- agency commands: each applied once -------------------------------------------

    def command_applied(self, nonce: str) -> bool:
        """Whether the agency command ``nonce`` was applied (remembered, or sealed just
        before a power cut: the chain is the record)."""
        if self._rows("select 1 from applied_commands where nonce = ?", [nonce]):
            return True
        if any(e.body.get("nonce") == nonce for e in self.entries("assignment")):
            return True
        return any(
            (e.body.get("command") or {}).get("nonce") == nonce
            for kind in ("session_open", "session_close")
            for e in self.entries(kind)
        )

    def applied_command_seq(self, nonce: str) -> int | None:
        """The entry sealed for the agency command ``nonce`` when it was applied (None:
        not remembered, e.g. sealed just before a power cut)."""
        rows = self._rows("select seq from applied_commands where nonce = ?", [nonce])
        return int(rows[0]["seq"]) if rows and rows[0]["seq"] is not None else None

    def remember_command(
        self, nonce: str, command: str, issued: float, expires: float, applied: float, seq: int
    ) -> None:
        row = {
            "nonce": nonce,
            "command": command,
            "issued": issued,
            "expires": expires,
            "applied": applied,
            "seq": seq,
        }
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
            entry.body.get("file"),
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

    def sessions(self) -> list[dict[str, Any]]:
        """Sessions with their open entry's body, newest last (for status and the CLI)."""
        return [
            {"session": r["session"], **json.loads(r["entry"])["payload"]["body"]}
            for r in self._rows(
                "select session, entry from entries where kind='session_open' order by seq"
            )
        ]


# -- what the uploader asks --------------------------------------------------------------
# Transfer state (what the store acknowledged, refused and receipted) lives here, beside the
# entries, so that it survives restarts and outages. The uploader decides; this only stores.


class SyncLedger:
    """The uploader's view of ``journal.db`` (its own connection, WAL; one thread).

    Segment manifests are returned as their entry's body, undecoded: the uploader reads
    what it needs from them in one place (``agent.sync_plan.segment``).

    Example::

        ledger = SyncLedger(root)
        ledger.unacked(64)              # [Entry(seq=1, ...), ...] oldest first
        ledger.unreceipted_segments()   # [(7, {"sha256": ..., "size": ..., ...}), ...]
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
                "create table if not exists sync_refused (seq integer primary key, reason text)"
            )
            # The receipts themselves are kept here (verifiable, never deleted).
            self.db.execute(
                "create table if not exists receipts (sha256 text primary key, seq integer,"
                " received real, deleted real, receipt text)"
            )
            columns = {r[1] for r in self.db.execute("pragma table_info(receipts)")}
            if "receipt" not in columns:  # a journal from before receipts were kept here
                self.db.execute("alter table receipts add column receipt text")
        self._batch = 0

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
        """How many sealed segments have no receipt (counted, nothing decoded)."""
        sql = (
            "select count(*) from entries where kind = 'segment'"
            " and json_extract(entry, '$.payload.body.sha256') not in"
            " (select sha256 from receipts) and seq not in (select seq from sync_refused)"
        )
        return int(self.db.execute(sql).fetchone()[0])

    def unreceipted_segments(
        self, limit: int = -1, acked: bool = False
    ) -> list[tuple[int, dict[str, Any]]]:
        """(seq, manifest) of sealed segments whose media has no receipt, oldest first
        (not those whose manifest the store refused: it will not take their media);
        ``acked``: only those whose manifest the store acknowledged; at most ``limit``."""
        only_acked = " and seq in (select seq from sync_acks)" if acked else ""
        rows = self.db.execute(
            "select seq, json_extract(entry, '$.payload.body') as manifest"
            " from entries where kind = 'segment'"
            " and json_extract(entry, '$.payload.body.sha256') not in"
            " (select sha256 from receipts)"
            f" and seq not in (select seq from sync_refused){only_acked} order by seq limit ?",
            (limit,),
        ).fetchall()
        return [(int(r["seq"]), json.loads(r["manifest"])) for r in rows]

    def sealed(self, seq: int) -> tuple[str, dict[str, Any]] | None:
        """(entry hash, manifest) of the segment this device sealed at ``seq``; None if the
        entry at ``seq`` is not a segment (or there is none)."""
        row = self.db.execute(
            "select hash, json_extract(entry, '$.payload.body') as manifest"
            " from entries where seq = ? and kind = 'segment'",
            (seq,),
        ).fetchone()
        return None if row is None else (str(row["hash"]), json.loads(row["manifest"]))

    def ack(self, seq: int) -> None:
        self.db.execute("insert or ignore into sync_acks values (?)", (seq,))
        self._commit()

    def refused(self, seq: int, reason: str) -> None:
        self.db.execute("insert or replace into sync_refused values (?, ?)", (seq, reason))
        self._commit()

    def receipt(self, sha256: str, seq: int, data: bytes, now: float) -> None:
        """Keep a verified receipt."""
        self.db.execute(
            "insert or ignore into receipts values (?, ?, ?, null, ?)",
            (sha256, seq, now, data.decode()),
        )
        self._commit()

    def receipted_before(self, received: float) -> list[tuple[str, int, dict[str, Any]]]:
        """(sha256, seq, manifest) of receipted media still on the device, receipted at or
        before ``received``."""
        rows = self.db.execute(
            "select r.sha256, r.seq, json_extract(e.entry, '$.payload.body') as manifest"
            " from receipts r join entries e on e.seq = r.seq"
            " where r.deleted is null and r.received <= ?",
            (received,),
        ).fetchall()
        return [(r["sha256"], int(r["seq"]), json.loads(r["manifest"])) for r in rows]

    def deleted(self, sha256: str, now: float) -> None:
        self.db.execute("update receipts set deleted = ? where sha256 = ?", (now, sha256))
        self._commit()

    def close(self) -> None:
        self.db.close()

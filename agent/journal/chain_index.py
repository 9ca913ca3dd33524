"""The journal's index of the chain: every sealed entry, as a file and as a row in SQLite
(WAL), and what the recorder asks of it (sessions, segments, gaps, commands applied).

Write order is what makes a power cut harmless: the media file is fsynced before its
manifest is sealed; the entry file is written atomically (temp, fsync, rename) before the
database row; and on open, entry files the database has not seen are imported. At every
instant the files are a valid chain prefix and the database can be rebuilt from them.
"""

from __future__ import annotations

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

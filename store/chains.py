"""The chains the store keeps, one per device: its ``entries``, the second branches of
forks (``forks``) and the problems found on them (``chain_problems``); this module speaks
their SQL for the store's ingest. Each entry is kept as judged (:mod:`store.ingest`):
nothing here refuses, and nothing kept is ever overwritten.

Example::

    chains = Chains(db, skew_seconds=300)
    with db.transaction():
        ack = chains.record("bwc-1", entry, now, (wall, None))
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from evidence.manifest import SegmentManifest
from evidence.messages import Ack
from evidence.seal import Entry
from store.db import Database
from store.judge import file_pattern, seals_file

log = logging.getLogger("store.ingest")  # what the ingest keeps, told in its log

# A chain entry is kept in entries, or in forks when it is the second branch of a fork.
_KEEP = {
    "entries": "insert into entries values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "forks": "insert into forks values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}
_FORK = "this device's key is in two places: a second entry at seq %d (%s), kept"


class Chains:
    def __init__(self, db: Database, skew_seconds: float) -> None:
        self.db, self.skew_seconds = db, skew_seconds

    def kept(self, device: str, e: Entry) -> bool:
        """Whether this very entry is stored (on the chain or a fork's second branch)."""
        return e.hash in self.hashes("entries", device, e.seq) | self.hashes("forks", device, e.seq)

    def last_seq(self, device: str) -> int:
        rows = self.db.query("select max(seq) as m from entries where device = ?", (device,))
        return int(rows[0]["m"] or 0)

    def sealer_of(self, device: str, e: Entry, m: SegmentManifest) -> tuple[int, str] | None:
        """The entry (seq, hash) on ``device``'s chain sealing the file ``m`` names, at
        another sequence number than ``e`` (at the same one, ``e`` is a fork: both branches
        are kept, the second beside the chain). A device names its files
        ``segments/<session>/…``: the same session's entries are searched, by text first."""
        if e.payload["prev"] in self.hashes("forks", device, e.seq - 1):
            return None  # on a fork's second branch: kept beside the chain, never laid out
        rows = self.db.query(
            "select seq, hash, entry from entries where device = ? and session = ?"
            " and seq <> ? and kind = 'segment' and entry like ? escape '\\'",
            (device, e.session, e.seq, file_pattern(m)),
        )
        for r in rows:
            if seals_file(str(r["entry"]), m.file):
                return int(r["seq"]), str(r["hash"])[:16]
        return None

    def record(self, device: str, e: Entry, now: float, judged: tuple[float, str | None]) -> Ack:
        """Keep a judged entry (inside the caller's transaction)."""
        wall, flag = judged
        main = self.hashes("entries", device, e.seq)
        if e.hash in main or e.hash in self.hashes("forks", device, e.seq):
            return Ack(seq=e.seq, ok=True, reason="duplicate")
        # A second entry at a sequence number, or one continuing such an entry: a
        # fork. Both branches are signed by a registered key, so both are kept (and
        # their media receipted), and the fork is raised as an alert.
        if main or e.payload["prev"] in self.hashes("forks", device, e.seq - 1):
            self.insert("forks", device, e, wall, now, flag)
            if main:
                self.problem(device, e.seq, "fork", _FORK % (e.seq, e.hash[:16]), now)
            log.warning(
                "fork: %s entry %d (%s) kept on a second branch", device, e.seq, e.hash[:16]
            )
            return Ack(seq=e.seq, ok=True, reason="fork: kept on a second branch")
        self.insert("entries", device, e, wall, now, flag)
        # Continuity both ways: entries may arrive out of order across workers.
        before = self.db.query(
            "select hash from entries where device = ? and seq = ?", (device, e.seq - 1)
        )
        if before and before[0]["hash"] != e.payload["prev"]:
            self.problem(
                device, e.seq, "chain_break", "does not name the hash of the entry before it", now
            )
        after = self.db.query(
            "select seq, prev from entries where device = ? and seq = ?", (device, e.seq + 1)
        )
        if after and after[0]["prev"] != e.hash:
            self.problem(
                device,
                e.seq + 1,
                "chain_break",
                "does not name the hash of the entry before it",
                now,
            )
        return Ack(seq=e.seq, ok=True)

    def hashes(self, table: str, device: str, seq: int) -> set[str]:
        rows = self.db.query(
            f"select hash from {table} where device = ? and seq = ?", (device, seq)
        )
        return {r["hash"] for r in rows}

    def insert(
        self, table: str, device: str, e: Entry, wall: float, now: float, flag: str | None
    ) -> None:
        row = (device, e.seq, e.hash, e.payload["prev"], e.kind, e.session, wall)
        self.db.execute(_KEEP[table], (*row, e.to_json().decode(), now, flag))

    def time_flags(self, device: str, e: Entry, wall: float, now: float) -> str | None:
        """``future_dated`` (the device's time ahead of the receive time by more than the
        skew bound) and ``clock_backwards`` (a boot dated before the entry preceding it)."""
        flags = []
        if wall > now + self.skew_seconds:
            flags.append("future_dated")
        if e.kind == "boot":
            before = self.db.query(
                "select wall from entries where device = ? and seq = ?", (device, e.seq - 1)
            )
            if before and wall < float(before[0]["wall"]) - self.skew_seconds:
                flags.append("clock_backwards")
        return ",".join(flags) or None

    def problem(self, device: str, seq: int, code: str, detail: str, now: float) -> None:
        self.db.execute(
            "insert into chain_problems values (?, ?, ?, ?, ?) on conflict do nothing",
            (device, seq, code, detail, now),
        )


@contextmanager
def savepoint(db: Database) -> Iterator[None]:
    """Inside a transaction, a part that fails alone: rolled back to where it began, the
    transaction goes on (SQLite and PostgreSQL both)."""
    if not db.postgres and not db.conn.in_transaction:
        db.execute("begin")  # else SQLite's outermost savepoint would be the transaction
    db.execute("savepoint segment")
    try:
        yield
    except BaseException:
        db.execute("rollback to savepoint segment")
        db.execute("release savepoint segment")
        raise
    db.execute("release savepoint segment")

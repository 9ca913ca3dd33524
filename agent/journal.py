"""The device journal: every sealed entry, as a file and as a row in SQLite (WAL).

Write order is what makes a power cut harmless: the media file is fsynced before its
manifest is sealed; the entry file is written atomically (temp, fsync, rename) before the
database row; and on open, entry files the database has not seen are imported. At every
instant the files are a valid chain prefix and the database can be rebuilt from them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from agent.evidence_dir import CHAIN, entry_name, load_chain
from common.files import write_atomic
from evidence.seal import Entry


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / CHAIN).mkdir(parents=True, exist_ok=True)
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
        self._import_orphans()

    def append(self, entry: Entry) -> None:
        write_atomic(self.root / entry_name(entry.seq), entry.to_json())
        self._insert(entry)

    def last(self) -> Entry | None:
        rows = list(self.db.query("select entry from entries order by seq desc limit 1"))
        return Entry.from_json(rows[0]["entry"].encode()) if rows else None

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        where, args = ("where kind = ?", [kind]) if kind else ("", [])
        for row in self.db.query(f"select entry from entries {where} order by seq", args):
            yield Entry.from_json(row["entry"].encode())

    def close(self) -> None:
        self.db.conn.close()

    def _insert(self, entry: Entry) -> None:
        row: dict[str, Any] = {
            "seq": entry.seq,
            "hash": entry.hash,
            "kind": entry.kind,
            "session": entry.session,
            "file": entry.body.get("file"),
            "wall": entry.payload["at"]["wall"],
            "entry": entry.to_json().decode(),
        }
        with self.db.conn:
            self._entries.insert(row, replace=True)

    def _import_orphans(self) -> None:
        """Entries written to file but not to the database before a power cut."""
        known = {r["seq"] for r in self.db.query("select seq from entries")}
        for _, e in load_chain(self.root):
            if isinstance(e, Entry) and e.seq not in known:
                self._insert(e)

    def sessions(self) -> list[dict[str, Any]]:
        """Sessions with their open entry's body, newest last (for status and the CLI)."""
        return [
            {"session": r["session"], **json.loads(r["entry"])["payload"]["body"]}
            for r in self.db.query(
                "select session, entry from entries where kind='session_open' order by seq"
            )
        ]

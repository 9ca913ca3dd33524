"""The store's metadata database: SQLite (default, WAL, through sqlite-utils) or PostgreSQL.

One small wrapper so the store's SQL is written once: ``?`` placeholders everywhere
(translated for psycopg), portable types, ``ON CONFLICT`` for idempotent inserts.

Example::

    db = Database.connect("sqlite:///var/lib/unbroken/store.db")
    db.execute("insert into receipts values (?, ?, ?, ?, ?) on conflict do nothing", row)
    db.query("select * from receipts where device = ?", ("bwc-1",))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

SCHEMA = [
    """create table if not exists entries (
        device text not null, seq bigint not null, hash text not null, prev text not null,
        kind text not null, session text, wall double precision not null,
        entry text not null, received double precision not null, flag text,
        primary key (device, seq))""",
    # The second branch of a fork (the key in two places): kept, never thrown away.
    """create table if not exists forks (
        device text not null, seq bigint not null, hash text not null, prev text not null,
        kind text not null, session text, wall double precision not null,
        entry text not null, received double precision not null, flag text,
        primary key (device, seq, hash))""",
    """create table if not exists chain_problems (
        device text not null, seq bigint not null, code text not null, detail text not null,
        at double precision not null, primary key (device, seq, code))""",
    # Per device: two devices may upload identical bytes (stored once, receipted twice).
    """create table if not exists blobs (
        device text not null, sha256 text not null, seq bigint not null,
        size bigint not null, chunk_size bigint not null, chunks text not null,
        complete double precision, primary key (device, sha256))""",
    # When each upload began: one unfinished for too long is expired (store.uploads).
    """create table if not exists uploads (
        device text not null, sha256 text not null, started double precision not null,
        primary key (device, sha256))""",
    """create table if not exists chunks (
        device text not null, sha256 text not null, off bigint not null,
        primary key (device, sha256, off))""",
    """create table if not exists receipts (
        device text not null, sha256 text not null, seq bigint not null,
        stored_at double precision not null, receipt text not null,
        primary key (device, sha256))""",
    """create table if not exists rejections (
        device text not null, topic text not null, reason text not null,
        at double precision not null)""",
    """create table if not exists statements (
        device text not null, gap text not null, at double precision not null,
        doc text not null, primary key (device, gap))""",
    # Store workers' heartbeats, per group: which one serves which device (store.pinning).
    """create table if not exists workers (
        grp text not null, name text not null, seen double precision not null,
        primary key (grp, name))""",
    """create table if not exists statuses (
        device text primary key, status text not null, at double precision not null)""",
    # Every time footage leaves the store (decrypted to export, or laid out): who, what, when.
    """create table if not exists access_log (
        at double precision not null, who text not null, action text not null,
        device text not null, session text, detail text not null)""",
    # Agency commands kept for their device until it answers or they expire (store.mailbox).
    """create table if not exists commands (
        nonce text primary key, device text not null, command text not null,
        data text not null, issued double precision not null,
        expires double precision not null, queued double precision not null,
        sent double precision, sends integer not null default 0,
        state text not null, reason text, seq bigint, answer text,
        answered double precision, case_id text)""",
    "create index if not exists commands_by_device on commands (device, state)",
    # What the store report asks per device (store.report), so a device costs what it
    # holds, not what the store holds: its refusals counted by reason from the index alone;
    # its last entry of a kind (install, assignment); its flagged entries (few of many);
    # its receipts since its last status.
    "create index if not exists rejections_by_device on rejections (device, reason)",
    "create index if not exists entries_by_kind on entries (device, kind, seq)",
    # a session's segments, asked for each new segment (a file sealed twice is refused)
    "create index if not exists entries_by_session on entries (device, session, kind)",
    "create index if not exists entries_flagged on entries (device, flag) where flag is not null",
    "create index if not exists receipts_by_time on receipts (device, stored_at)",
]


class DatabaseMissing(ValueError):
    """The database asked for is not there (or is not the store's): says which and why."""


class Database:
    def __init__(self, conn: Any, postgres: bool, schema: bool = True) -> None:
        self.conn = conn
        self.postgres = postgres
        if schema:
            with self.transaction():
                for stmt in SCHEMA:
                    self.execute(stmt)

    @staticmethod
    def connect(url: str) -> Database:
        """``postgresql://...`` or ``sqlite:///path`` (or a plain path)."""
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            return Database(psycopg.connect(url), postgres=True)
        path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        sqlite_utils.Database(conn)  # the stack's SQLite layer; we keep its connection
        return Database(conn, postgres=False)

    @staticmethod
    def open_existing(url: str) -> Database:
        """The store's database as it is, read-only (for what only reads, as the report):
        a misspelt path is DatabaseMissing naming it, never a new empty database."""
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            try:
                conn = psycopg.connect(url)
            except psycopg.OperationalError as e:
                raise DatabaseMissing(f"{_safe(url)}: {str(e).strip()}") from None
            conn.read_only = True
            return Database._checked(Database(conn, postgres=True, schema=False), _safe(url))
        path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        if not path.is_file():
            what = "is a directory, not" if path.is_dir() else "no such"
            raise DatabaseMissing(f"{path}: {what} database file")
        ro = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        return Database._checked(Database(ro, postgres=False, schema=False), str(path))

    @staticmethod
    def _checked(db: Database, where: str) -> Database:
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if db.postgres:
            import psycopg

            errors = (psycopg.Error,)
        try:
            db.query("select count(*) as n from entries")
        except errors:
            db.close()
            raise DatabaseMissing(f"{where}: not the store's database (no entries table)") from None
        if db.postgres:
            db.conn.rollback()  # end the read's transaction: a report may take long
        return db

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        return int(cur.rowcount or 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[None]:
        """A transaction; ``durable=False`` for what may be lost in a crash without harm
        (a chunk's bookkeeping: the device sends it again), which spares an fsync."""
        if not durable and self.postgres:
            self.execute("set local synchronous_commit to off")
        elif not durable:
            self.conn.execute("PRAGMA synchronous=NORMAL")  # outside a transaction: allowed
        try:
            yield
            self.conn.commit()
            if not durable and not self.postgres:
                self.conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            self.conn.rollback()
            raise

    def heartbeat(self, group: str, worker: str, now: float) -> dict[str, float]:
        """Say ``worker`` of ``group`` is alive at ``now``; when each of the group's workers
        was last heard of (store.pinning decides from it)."""
        with self.transaction(durable=False):  # a lost beat is the next one's to say
            self.execute(
                "insert into workers values (?, ?, ?) on conflict (grp, name)"
                " do update set seen = excluded.seen",
                (group, worker, now),
            )
        rows = self.query("select name, seen from workers where grp = ?", (group,))
        return {str(r["name"]): float(r["seen"]) for r in rows}

    def last_beat(self, group: str, worker: str) -> float | None:
        """When ``worker`` of ``group`` last beat (None: never)."""
        rows = self.query("select seen from workers where grp = ? and name = ?", (group, worker))
        return float(rows[0]["seen"]) if rows else None

    def close(self) -> None:
        self.conn.close()


def _safe(url: str) -> str:
    """A PostgreSQL URL without its password, to name in an error."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"

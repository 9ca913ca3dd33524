"""The store's metadata database: SQLite (default, WAL, through sqlite-utils) or PostgreSQL.

One small wrapper so the store's SQL is written once: ``?`` placeholders everywhere
(translated for psycopg), portable types, ``ON CONFLICT`` for idempotent inserts. The
tables are Django's migrations' (:mod:`store.schema`): :meth:`Database.connect` brings the
database to the current schema; :meth:`Database.open_existing` takes it as it is.

Example::

    db = Database.connect("sqlite:///var/lib/unbroken/store.db")
    db.execute("insert into receipts values (?, ?, ?, ?, ?) on conflict do nothing", row)
    db.query("select * from receipts where device = ?", ("bwc-1",))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from store.schema import SchemaError, bring_current, pending, sqlite_path


class DatabaseMissing(ValueError):
    """The database asked for is not there (or is not the store's): says which and why."""


class SchemaBehind(DatabaseMissing):
    """The database is there but behind the current schema (read-only: not migrated)."""


class Database:
    def __init__(self, conn: Any, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres
        self.migrated: list[str] = []  # the migrations connect() applied (usually none)

    @staticmethod
    def connect(url: str) -> Database:
        """``postgresql://...`` or ``sqlite:///path`` (or a plain path), at the current
        schema (migrated first if it was behind: :mod:`store.schema`)."""
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            db = Database(psycopg.connect(url), postgres=True)
        else:
            path = sqlite_path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            sqlite_utils.Database(conn)  # the stack's SQLite layer; we keep its connection
            db = Database(conn, postgres=False)
        try:
            db.migrated = bring_current(url, db, without_password(url))
        except BaseException:
            db.close()
            raise
        db.end_read()
        return db

    @staticmethod
    def open_existing(url: str) -> Database:
        """The store's database as it is, read-only (for what only reads, as the report):
        a misspelt path is DatabaseMissing naming it, never a new empty database."""
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            try:
                conn = psycopg.connect(url)
            except psycopg.OperationalError as e:
                raise DatabaseMissing(f"{without_password(url)}: {str(e).strip()}") from None
            conn.read_only = True
            return Database._checked(Database(conn, postgres=True), without_password(url))
        path = sqlite_path(url)
        if not path.is_file():
            what = "is a directory, not" if path.is_dir() else "no such"
            raise DatabaseMissing(f"{path}: {what} database file")
        ro = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        return Database._checked(Database(ro, postgres=False), str(path))

    @staticmethod
    def _checked(db: Database, where: str) -> Database:
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if db.postgres:
            import psycopg

            errors = (psycopg.Error,)
        try:
            db.query("select count(*) as n from entries")
            behind = pending(db, where)
        except errors:
            db.close()
            raise DatabaseMissing(f"{where}: not the store's database (no entries table)") from None
        except SchemaError as e:
            db.close()
            raise DatabaseMissing(str(e)) from None
        if behind:
            db.close()
            raise SchemaBehind(
                f"{where}: the store's database is behind this version's schema (it lacks "
                f"migration {', '.join(behind)}); bring it up to date with "
                "`unbroken store migrate --config STORE_TOML` (or start the store), then read it"
            )
        db.end_read()  # a report may take long
        return db

    def end_read(self) -> None:
        """End the transaction a read began (PostgreSQL): no snapshot held while idle."""
        if self.postgres:
            self.conn.rollback()

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


def without_password(url: str) -> str:
    """A PostgreSQL URL without its password, to name in an error."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"

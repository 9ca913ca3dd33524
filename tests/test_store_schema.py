"""The store's schema is Django's migrations': a new database is migrated, a current one
opened with one query, one made before migrations adopted with every row, one behind the
schema refused by the read-only report; on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.db import Database, DatabaseMissing, SchemaBehind
from store.evidence_view import log_access
from store.rejections import record_refusal
from store.schema import SchemaError, known_migrations
from tests.fixtures.store import postgres_url
from unbroken.cli import main

BEFORE_MIGRATIONS = Path(__file__).parent / "fixtures" / "store_schema_before_migrations.sql"
TABLES = [
    "access_log", "blobs", "chain_problems", "chunks", "commands", "entries", "forks",
    "receipts", "rejections", "statements", "statuses", "uploads", "workers",
]  # fmt: skip
INDEXES = [
    "commands_by_device", "entries_by_kind", "entries_by_session", "entries_flagged",
    "receipts_by_time", "rejections_by_device",
]  # fmt: skip

# A row for each table of a store made before migrations (the logs without a key twice).
ROWS: dict[str, list[tuple[Any, ...]]] = {
    "entries": [("bwc-1", 1, "h1", "0" * 64, "install", None, 10.0, "{}", 11.0, None)],
    "forks": [("bwc-1", 1, "h2", "0" * 64, "install", None, 10.0, "{}", 12.0, "fork")],
    "chain_problems": [("bwc-1", 1, "fork", "two entries", 12.0)],
    "blobs": [("bwc-1", "a" * 64, 2, 100, 50, "[]", None)],
    "uploads": [("bwc-1", "a" * 64, 13.0)],
    "chunks": [("bwc-1", "a" * 64, 0)],
    "receipts": [("bwc-1", "b" * 64, 3, 14.0, "{}")],
    "rejections": [("bwc-1", "t/1", "quota: x", 15.0), ("bwc-2", "t/2", "malformed: y", 14.0)],
    "statements": [("bwc-1", "gap-1", 16.0, "{}")],
    "workers": [("stores", "store-1", 17.0)],
    "statuses": [("bwc-1", '{"online": true}', 18.0)],
    "access_log": [
        (19.0, "ann", "export", "bwc-1", "s1", "to /x"),
        (18.0, "bob", "lay-out", "bwc-1", None, "to /y"),
    ],
    "commands": [
        ("n1", "bwc-1", "assign", "{}", 1.0, 2.0, 1.5, None, 0, "queued", None, None, None,
         None, None)
    ],
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else postgres_url()


def _raw(url: str) -> Any:
    """A plain driver connection, as the store before migrations had."""
    if url.startswith("postgresql://"):
        import psycopg

        return psycopg.connect(url, autocommit=True)
    return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)


def _make_before_migrations(url: str, leave_out: tuple[str, ...] = ()) -> None:
    """The store's database as the store made it before migrations, with rows."""
    conn = _raw(url)
    for statement in BEFORE_MIGRATIONS.read_text().split(";"):
        sql = "\n".join(ln for ln in statement.splitlines() if not ln.startswith("--")).strip()
        if sql and not any(f" {table} " in sql + " " for table in leave_out):
            conn.execute(sql)
    mark = "%s" if url.startswith("postgresql://") else "?"
    for table, rows in ROWS.items():
        if table not in leave_out:
            for row in rows:
                conn.execute(f"insert into {table} values ({', '.join([mark] * len(row))})", row)
    conn.close()


def _shape(db: Database) -> dict[str, Any]:
    """Each store table's columns (name, type, not null) and the database's index names.
    On SQLite a column's type is its affinity: a table made before migrations declares
    ``double precision`` where Django declares ``real``, both REAL; and its text keys did not
    say ``not null`` (SQLite's keys other than integers allow NULL; the store wrote none)."""
    if db.postgres:
        cols = db.query(
            "select table_name as t, column_name as c, data_type as ty, is_nullable as n"
            " from information_schema.columns where table_schema = current_schema()"
        )
        indexes = db.query(
            "select indexname as i from pg_indexes where schemaname = current_schema()"
        )
    else:
        cols = []
        for table in [*TABLES, "django_migrations"]:
            for r in db.query(f"select * from pragma_table_info('{table}')"):
                null = not (r["notnull"] or r["pk"])
                cols.append({"t": table, "c": r["name"], "ty": _affinity(r["type"]), "n": null})
        indexes = db.query("select name as i from sqlite_master where type = 'index'")
    return {
        "columns": sorted((r["t"], r["c"], r["ty"], r["n"]) for r in cols),
        "indexes": sorted(r["i"] for r in indexes),
    }


def _affinity(declared: str) -> str:
    """SQLite's rules (https://www.sqlite.org/datatype3.html, 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t:
        return "BLOB"
    return "REAL" if any(s in t for s in ("REAL", "FLOA", "DOUB")) else "NUMERIC"


def _rows(db: Database, table: str) -> list[dict[str, Any]]:
    return db.query(f"select * from {table} order by 1, 2, 3")


@pytest.fixture
def fresh_shape(tmp_path: Path, url: str) -> Iterator[dict[str, Any]]:
    """The schema of a new database of the same kind as ``url``."""
    other = f"sqlite:///{tmp_path / 'fresh.db'}" if url.startswith("sqlite") else postgres_url()
    db = Database.connect(other)
    yield _shape(db)
    db.close()


def test_a_new_store_is_migrated_once_then_opened_as_it_is(url: str) -> None:
    db = Database.connect(url)
    assert db.migrated == list(known_migrations()) == ["0001_initial"]
    shape = _shape(db)
    assert {c[0] for c in shape["columns"]} >= set(TABLES)
    assert set(INDEXES) <= set(shape["indexes"])
    assert ("rejections", "id") in {c[:2] for c in shape["columns"]}
    db.close()
    again = Database.connect(url)
    assert again.migrated == [] and _shape(again) == shape
    applied = again.query("select name from django_migrations where app = 'store'")
    assert applied == [{"name": "0001_initial"}]
    again.close()


def test_the_partial_index_holds_only_flagged_entries(tmp_path: Path) -> None:
    db = Database.connect(str(tmp_path / "store.db"))
    (sql,) = db.query("select sql from sqlite_master where name = 'entries_flagged'")
    assert sql["sql"].endswith('WHERE "flag" IS NOT NULL')
    db.close()


def test_a_store_made_before_migrations_is_adopted_with_every_row(
    url: str, fresh_shape: dict[str, Any]
) -> None:
    _make_before_migrations(url)
    db = Database.connect(url)
    assert db.migrated == ["0001_initial"]
    assert _shape(db) == fresh_shape  # as if migrated new
    for table, rows in ROWS.items():
        kept = [tuple(v for k, v in r.items() if k != "id") for r in _rows(db, table)]
        if table not in ("rejections", "access_log"):
            assert kept == sorted(rows), table
    # the logs that had no key: numbered in the order they were written
    assert [(r["id"], r["topic"]) for r in db.query("select * from rejections order by id")] == [
        (1, "t/1"),
        (2, "t/2"),
    ]
    assert [(r["id"], r["who"]) for r in db.query("select * from access_log order by id")] == [
        (1, "ann"),
        (2, "bob"),
    ]
    with db.transaction():  # and the store goes on writing them
        record_refusal(db, "bwc-1", "t/3", "quota: z", 20.0)
    log_access(db, "cat", "export", "bwc-1", "s2", "to /z", 21.0)
    assert db.query("select max(id) as n from rejections") == [{"n": 3}]
    assert db.query("select max(id) as n from access_log") == [{"n": 3}]
    db.close()
    assert Database.connect(url).migrated == []


def test_a_store_from_before_a_table_was_added_gets_it(url: str) -> None:
    _make_before_migrations(url, leave_out=("commands", "uploads"))
    db = Database.connect(url)
    assert db.migrated == ["0001_initial"]
    assert db.query("select count(*) as n from commands") == [{"n": 0}]
    assert db.query("select count(*) as n from entries") == [{"n": 1}]
    db.close()


def test_a_table_that_is_not_the_stores_is_refused_and_left_as_it_was(url: str) -> None:
    _make_before_migrations(url)
    conn = _raw(url)
    conn.execute("alter table statuses add column colour text")
    conn.close()
    with pytest.raises(SchemaError, match=r"table statuses is not the store's: .*colour"):
        Database.connect(url)
    conn = _raw(url)  # nothing changed: the log still without its id, its rows all there
    cols = [r[0] for r in conn.execute("select * from rejections").description]
    assert cols == ["device", "topic", "reason", "at"]
    assert len(conn.execute("select * from rejections").fetchall()) == 2
    conn.close()


def test_the_report_does_not_migrate_a_store_behind_the_schema(url: str) -> None:
    _make_before_migrations(url)
    with pytest.raises(SchemaBehind, match=r"behind .*0001_initial.*unbroken store migrate"):
        Database.open_existing(url)
    conn = _raw(url)  # not touched: no migrations table made
    cols = [r[0] for r in conn.execute("select * from rejections").description]
    assert cols == ["device", "topic", "reason", "at"]
    conn.close()
    Database.connect(url).close()
    db = Database.open_existing(url)
    assert len(db.query("select * from rejections")) == 2
    db.close()


def test_a_store_a_newer_version_migrated_is_refused(url: str) -> None:
    Database.connect(url).close()
    conn = _raw(url)
    mark = "%s" if url.startswith("postgresql://") else "?"
    conn.execute(
        f"insert into django_migrations (app, name, applied) values ({mark}, {mark}, {mark})",
        ("store", "0999_later", "2030-01-01 00:00:00"),
    )
    conn.close()
    with pytest.raises(SchemaError, match=r"0999_later.*migrated by a newer version"):
        Database.connect(url)
    with pytest.raises(DatabaseMissing, match=r"0999_later.*newer version"):
        Database.open_existing(url)


def test_workers_opening_a_new_store_together_migrate_it_once(url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            db = Database.connect(url)
            results.append(db.migrated)
            db.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == [[], [], [], ["0001_initial"]]


def test_a_current_store_opens_without_starting_django(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Database.connect(str(path)).close()
    code = (
        "import sys; from store.db import Database; "
        f"Database.connect({str(path)!r}).close(); "
        "print('django' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_the_models_and_the_migrations_agree() -> None:
    code = (
        "import django; from django.conf import settings; "
        "settings.configure(INSTALLED_APPS=['store'], DATABASES={}); django.setup(); "
        "from django.core.management import call_command; "
        "call_command('makemigrations', 'store', check=True, dry_run=True)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_migrate_command_says_what_it_applied(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_before_migrations(url)
    cfg = tmp_path / "store.toml"
    cfg.write_text(
        f'database = "{url}"\nblobs = "blobs"\nagency = "agency"\n'
        '[broker]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
    )
    assert main(["store", "migrate", "--config", str(cfg)]) == 0
    assert "applied 0001_initial" in capsys.readouterr().out
    assert main(["store", "migrate", "--config", str(cfg)]) == 0
    assert "already current (at 0001_initial)" in capsys.readouterr().out
    conn = _raw(url)
    conn.execute("alter table statuses add column colour text")
    conn.execute("delete from django_migrations")
    conn.close()
    assert main(["store", "migrate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "table statuses is not the store's" in err and "Traceback" not in err

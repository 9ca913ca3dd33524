"""The one place that brings a store database to the current schema.

Django's migrations own the store's tables (:mod:`store.models`, ``store/migrations``), as
they own the evidence library's beside them: one migration tool for every agency table. The
store's own SQL (:mod:`store.db`) stays the hot path; only the schema is Django's.

Opening a store asks first, on the store's own connection, which migrations its database
has (one query, no Django at all): a current database costs that. Only a database behind
the code (new, made before migrations, or from an older version) starts Django, configured
here once per process with the store app installed (no settings module needed), and a
connection for that database's URL under an alias of its own, so that one process may keep
several stores, SQLite and PostgreSQL. Migrations of one database run one at a time (a lock
on the directory, or a PostgreSQL advisory lock), so workers started together do not race.

A database made before migrations (its tables made by ``create table if not exists``) is
adopted: its tables are checked column by column against the first migration, the two logs
that had no key (refusals, access) are rebuilt with their ``id``, rows in their order,
any missing table or index is made, and the first migration recorded as applied. Nothing
else is touched; a table that is not what the store made is refused, naming it.

Example::

    url = "sqlite:///var/lib/unbroken/store.db"
    bring_current(url, db, url)     # ["0001_initial"] the first time, then []
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pkgutil
import threading
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import store.migrations

APP = "store"
FIRST = "0001_initial"
_setup = threading.Lock()


class SchemaError(ValueError):
    """The database cannot be brought to, or is not at, the store's schema: says why."""


class Queries(Protocol):
    """What the fast check needs of a connection: :class:`store.db.Database`."""

    postgres: bool

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


@cache
def known_migrations() -> tuple[str, ...]:
    """The store's migrations this code has, in order."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules(store.migrations.__path__) if not m.ispkg)
    )


def pending(db: Queries, where: str) -> list[str]:
    """The store migrations ``db`` lacks (empty: current). SchemaError for a database a
    newer version migrated (migrations this code does not know)."""
    if db.postgres:
        table = db.query("select to_regclass('django_migrations') is not null as present")
        present = bool(table[0]["present"])
    else:
        present = bool(
            db.query(
                "select 1 from sqlite_master where type = 'table' and name = 'django_migrations'"
            )
        )
    applied = (
        {r["name"] for r in db.query("select name from django_migrations where app = ?", (APP,))}
        if present
        else set()
    )
    if unknown := sorted(applied - set(known_migrations())):
        raise SchemaError(
            f"{where}: the store's database has migrations this version does not know "
            f"({', '.join(unknown)}): it was migrated by a newer version"
        )
    return [m for m in known_migrations() if m not in applied]


def bring_current(url: str, db: Queries, where: str) -> list[str]:
    """Apply what ``db`` (the store's connection to ``url``) lacks; the migrations applied
    (empty when it was current, the usual case: one query)."""
    if not pending(db, where):
        return []
    try:
        return _migrate(url)
    except SchemaError:
        raise
    except Exception as e:  # Django's and the driver's errors: named, never a traceback
        raise SchemaError(f"{where}: could not migrate the store's database: {e}") from e


def configure_django() -> None:
    """Django configured once per process with the store app (or, in a process that
    configured Django itself, checked to have it)."""
    with _setup:
        try:
            import django
        except ImportError:
            raise SchemaError(
                "the store's schema is Django's migrations: install the agency side's "
                "packages (pip install 'unbroken[agency]')"
            ) from None
        from django.apps import apps
        from django.conf import settings

        if not settings.configured:
            settings.configure(INSTALLED_APPS=[APP], DATABASES={}, USE_TZ=True)
        if not apps.ready:
            django.setup()
        if not apps.is_installed(APP):
            raise SchemaError(f"Django is configured without the {APP!r} app in INSTALLED_APPS")


def _database_settings(url: str) -> dict[str, Any]:
    if url.startswith(("postgresql://", "postgres://")):
        from psycopg.conninfo import conninfo_to_dict

        params = {k: v for k, v in conninfo_to_dict(url).items() if v is not None}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params.pop("dbname", ""),
            "USER": params.pop("user", ""),
            "PASSWORD": params.pop("password", ""),
            "HOST": params.pop("host", ""),
            "PORT": params.pop("port", ""),
            "OPTIONS": params,  # options=-csearch_path=..., sslmode, ...: as libpq takes them
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(sqlite_path(url).resolve()),
        "OPTIONS": {"timeout": 30},
    }


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (or a plain path)."""
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


@contextlib.contextmanager
def _connection(url: str) -> Iterator[Any]:
    """A Django connection to ``url``, under an alias of its own, closed after."""
    from django.db import DEFAULT_DB_ALIAS, connections

    wanted = _database_settings(url)  # a relative path resolved: the file, not the name
    alias = "store-" + hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    with _setup:
        if alias not in connections.settings:
            made = connections.configure_settings({DEFAULT_DB_ALIAS: {}, alias: wanted})
            connections.settings[alias] = made[alias]
    conn = connections[alias]
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _one_at_a_time(conn: Any, url: str) -> Iterator[None]:
    """Held while migrating: another process migrating the same database waits."""
    if conn.vendor == "postgresql":  # one lock per schema: the store's tables are in one
        key = "select hashtext('unbroken store schema ' || current_schema())"
        with conn.cursor() as cur:
            cur.execute(f"select pg_advisory_lock(({key}))")
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute(f"select pg_advisory_unlock(({key}))")
        return
    # On SQLite, a lock on the database's directory: never a descriptor of the database
    # file itself, whose closing would drop the locks SQLite holds on it (POSIX locks are
    # the process's, per file). flock locks are apart from SQLite's own fcntl locks.
    fd = os.open(sqlite_path(url).resolve().parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _migrate(url: str) -> list[str]:
    configure_django()
    from django.db.migrations.executor import MigrationExecutor

    with _connection(url) as conn, _one_at_a_time(conn, url):
        executor = MigrationExecutor(conn)
        adopted = []
        # a database made before migrations: adopted as the first migration
        if (APP, FIRST) not in executor.loader.applied_migrations and _has_entries(conn):
            _adopt(conn, executor.loader.project_state((APP, FIRST), at_end=True))
            adopted, executor = [FIRST], MigrationExecutor(conn)
        targets = executor.loader.graph.leaf_nodes(APP)
        plan = executor.migration_plan(targets)
        executor.migrate(targets, plan)
        return adopted + [m.name for m, _backwards in plan]


def _has_entries(conn: Any) -> bool:
    """Whether the store's main table is there (one query: Django's list of every table
    costs more on a PostgreSQL server holding many)."""
    with conn.cursor() as cur:
        if conn.vendor == "postgresql":
            cur.execute("select to_regclass('entries') is not null")
        else:
            cur.execute(
                "select count(*) from sqlite_master where type = 'table' and name = 'entries'"
            )
        return bool(cur.fetchone()[0])


def _adopt(conn: Any, state: Any) -> None:
    """Bring a database made before migrations to the first migration's tables, and
    record it applied: all in one transaction, or nothing."""
    from django.db.migrations.recorder import MigrationRecorder

    recorder = MigrationRecorder(conn)
    recorder.ensure_schema()
    with conn.schema_editor(atomic=True) as editor, conn.cursor() as cur:
        tables = set(conn.introspection.table_names(cur))
        for model in state.apps.get_app_config(APP).get_models():
            table = model._meta.db_table
            if table not in tables:  # made by a version before the table was
                editor.create_model(model)
                continue
            have = {c.name for c in conn.introspection.get_table_description(cur, table)}
            want = {f.column for f in model._meta.local_concrete_fields}
            if model._meta.pk.column == "id" and have == want - {"id"}:
                _number(editor, cur, model, sorted(have))
            elif have != want:
                raise SchemaError(
                    f"table {table} is not the store's: it has columns "
                    f"{', '.join(sorted(have))}; the store's are {', '.join(sorted(want))}"
                )
            else:
                _add_missing_indexes(editor, cur, model)
        recorder.record_applied(APP, FIRST)


def _number(editor: Any, cur: Any, model: Any, columns: list[str]) -> None:
    """A log made without a key, made again with its ``id``: every row, in its order."""
    conn, table, q = editor.connection, model._meta.db_table, editor.quote_name
    before = f"{table}__before_migrations"
    for name, about in conn.introspection.get_constraints(cur, table).items():
        if about["index"] and not about["primary_key"] and not name.startswith("sqlite_"):
            editor.execute(f"drop index {q(name)}")  # index names are the schema's
    editor.execute(f"alter table {q(table)} rename to {q(before)}")
    editor.create_model(model)  # its indexes are made when the editor ends
    listed = ", ".join(q(c) for c in columns)
    order = "ctid" if conn.vendor == "postgresql" else "rowid"
    editor.execute(
        f"insert into {q(table)} ({listed}) select {listed} from {q(before)} order by {order}"
    )
    counts = []
    for name in (before, table):
        cur.execute(f"select count(*) from {q(name)}")
        counts.append(cur.fetchone()[0])
    if counts[0] != counts[1]:
        raise SchemaError(f"table {table}: {counts[0]} rows before, {counts[1]} copied")
    editor.execute(f"drop table {q(before)}")


def _add_missing_indexes(editor: Any, cur: Any, model: Any) -> None:
    """The indexes the migration makes for ``model`` that its table lacks."""
    have = set(editor.connection.introspection.get_constraints(cur, model._meta.db_table))
    # Django's own list of what it makes for a model (its Meta indexes, and on PostgreSQL
    # the pattern index of a text key), so an adopted database is a migrated one.
    for statement in editor._model_indexes_sql(model):
        if str(statement.parts["name"]).strip('"') not in have:
            editor.execute(statement)

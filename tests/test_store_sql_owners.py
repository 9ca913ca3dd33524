"""Every store table has one module that writes it, and the schema one module that changes
it: read from the store's source, the SQL in its string literals (docstrings aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import store
from store.schema import APP, configure_django

STORE = Path(store.__file__).parent

# The one writer of each table (what only reads, as the report, may read any).
OWNERS = {
    "entries": "chains",
    "forks": "chains",
    "chain_problems": "chains",
    "blobs": "uploads",
    "uploads": "uploads",
    "chunks": "uploads",
    "receipts": "uploads",
    "rejections": "rejections",
    "statements": "statements",
    "workers": "db",
    "statuses": "ingest",
    "access_log": "evidence_view",
    "commands": "mailbox",
}
# The schema's own: Django's migrations, and the module applying them (its adoption of a
# database made before migrations copies two logs into their new tables).
SCHEMA = {"schema", "models"}

WRITE = re.compile(
    r"\b(?:insert\s+(?:or\s+\w+\s+)?into|replace\s+into|delete\s+from)\s+(\S*)|\bupdate\s+(\S+)\s+set\b",
    re.IGNORECASE,
)
DDL = re.compile(r"\b(?:create|alter|drop)\s+(?:unique\s+)?(?:table|index)\b", re.IGNORECASE)


def _sql_strings(source: str) -> list[str]:
    """The module's string literals but its docstrings; an f-string's fields as ``{}``."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append(
                "".join(
                    v.value if isinstance(v, ast.Constant) else "{}"
                    for v in node.values
                    if isinstance(v, ast.Constant | ast.FormattedValue)
                )
            )
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        ):
            out.append(node.value)
    return out


def writes(source: str) -> set[str]:
    """The tables a module's SQL writes; ``?`` for a table named only when it runs."""
    found = set()
    for text in _sql_strings(source):
        for m in WRITE.finditer(text):
            name = (m.group(1) or m.group(2) or "").strip('"')
            found.add(name if re.fullmatch(r"\w+", name) else "?")
    return found


def _store_modules() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(STORE.glob("*.py"))}


def test_the_owners_cover_every_table_of_the_schema() -> None:
    configure_django()
    from django.apps import apps

    tables = {m._meta.db_table for m in apps.get_app_config(APP).get_models()}
    assert set(OWNERS) == tables


def test_each_table_is_written_by_its_owner_and_no_other_module() -> None:
    written: dict[str, set[str]] = {}
    for module, source in _store_modules().items():
        if module in SCHEMA:
            continue
        for table in writes(source):
            written.setdefault(table, set()).add(module)
    assert "?" not in written, f"a write names its table only when it runs: {written['?']}"
    # every owner is found writing its tables (the scan sees them), and nobody else
    assert written == {table: {owner} for table, owner in OWNERS.items()}


def test_only_the_schema_changes_the_schema() -> None:
    changing = {
        m
        for m, source in _store_modules().items()
        if any(DDL.search(text) for text in _sql_strings(source))
    }
    assert changing <= SCHEMA


def test_the_scan_sees_writes_in_every_form() -> None:
    source = '''
"""A docstring that shows: insert into entries values (?)."""
def f(db, table):
    """update statuses set x = 1"""
    db.execute("insert into receipts (device) values (?) on conflict do nothing")
    db.execute("update commands set sent = ? where nonce = ?")
    db.execute(
        "delete from chunks"
        " where device = ?"
    )
    db.execute(f"delete from {table} where device = ?")
    db.execute("insert or replace into workers values (?)")
    db.query("select * from blobs where complete is null")
'''
    assert writes(source) == {"receipts", "commands", "chunks", "?", "workers"}

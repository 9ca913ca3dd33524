"""Every module of the product can be read whole: at most 400 lines, and no class over 300.

A module that grew past that does more than one job; the failure names each offender with
its size, so it can be split by what its parts are in the domain. Tests are not measured.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "agent",
    "common",
    "device",
    "evidence",
    "provisioning",
    "store",
    "simulator",
    "unbroken",
    "bench",
)
MODULE_LINES = 400
CLASS_LINES = 300


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def long_modules(paths: list[Path], limit: int = MODULE_LINES) -> list[str]:
    """``path: N lines`` for each module longer than ``limit`` lines."""
    sizes = ((p, len(p.read_text(encoding="utf-8").splitlines())) for p in paths)
    return [f"{_name(p)}: {n} lines" for p, n in sizes if n > limit]


def long_classes(paths: list[Path], limit: int = CLASS_LINES) -> list[str]:
    """``path:line Class: N lines`` for each class (nested ones too) longer than ``limit``,
    from its ``class`` line to its last (decorators not counted)."""
    found = []
    for p in paths:
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{_name(p)}:{node.lineno} {node.name}: {n} lines")
    return found


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def test_every_package_is_measured() -> None:
    # A moved package or a wrong root would otherwise make both checks below pass on nothing.
    counted = {p.relative_to(ROOT).parts[0] for p in modules()}
    assert counted == set(PACKAGES)


def test_no_module_is_longer_than_400_lines() -> None:
    offenders = long_modules(modules())
    assert not offenders, "modules over 400 lines:\n  " + "\n  ".join(offenders)


def test_no_class_is_longer_than_300_lines() -> None:
    offenders = long_classes(modules())
    assert not offenders, "classes over 300 lines:\n  " + "\n  ".join(offenders)


def test_the_measures_name_what_is_one_line_too_long(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(299))
    at_limit = tmp_path / "at_limit.py"
    at_limit.write_text(f"class Fits:\n{body}\n" + "\n" * 100)  # 300 + 100 lines
    over = tmp_path / "over.py"
    nested = body.replace("    x", "        x")
    over.write_text(f"def f() -> None:\n    class Inner:\n{nested}\n        y = 0\n" + "\n" * 99)
    assert long_modules([at_limit]) == [] and long_classes([at_limit]) == []
    assert long_modules([over]) == [f"{over}: 401 lines"]
    assert long_classes([over]) == [f"{over}:2 Inner: 301 lines"]

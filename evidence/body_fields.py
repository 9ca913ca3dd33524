"""Reading a sealed body's fields: the one place that names what is wrong in one.

Every body type (:mod:`evidence.manifest`, :mod:`evidence.session_bodies`,
:mod:`evidence.entries`) reads its fields through :class:`Fields`, so that a malformed
body is refused the same way everywhere: :class:`ManifestError`, naming the entry kind
and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from evidence.seal import Moment, SealError

T = TypeVar("T")


class ManifestError(SealError):
    """A sealed body is not what its kind says (a field missing or of the wrong type)."""


class Fields:
    """One body (or an object inside it) whose fields are read with their types checked;
    ``what`` names it in every error."""

    def __init__(self, body: object, what: str) -> None:
        if not isinstance(body, Mapping):
            raise ManifestError(f"{what}: not an object")
        self.body, self.what = body, what

    def get(self, key: str, kind: type[T] | tuple[type, ...], optional: bool = False) -> Any:
        if key not in self.body or (optional and self.body[key] is None):
            if optional:
                return None
            raise ManifestError(f"{self.what}: {key!r} is missing")
        value = self.body[key]
        numeric = kind in (float, (int, float))
        wrong = (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)
        if wrong and not (numeric and isinstance(value, int) and not isinstance(value, bool)):
            raise ManifestError(f"{self.what}: {key!r} is not {_name(kind)}")
        return value

    def moment(self, key: str, optional: bool = False) -> Moment | None:
        raw = self.get(key, dict, optional)
        if raw is None:
            return None
        f = Fields(raw, f"{self.what}.{key}")
        return Moment(f.get("wall", float), f.get("mono", float), f.get("synced", bool))

    def strings(self, key: str, optional: bool = False) -> list[str] | None:
        raw = self.get(key, list, optional)
        if raw is None:
            return None
        if not all(isinstance(v, str) for v in raw):
            raise ManifestError(f"{self.what}: {key!r} is not a list of strings")
        return list(raw)


def _name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    names.update({dict: "an object", list: "a list"})
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)

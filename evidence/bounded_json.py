"""JSON from untrusted hands (the network, a seized card): bounded size, depth and numbers.

The standard parser accepts a 100,000-digit integer (then fails converting it), ``1e400``
(as infinity), ``NaN`` and nesting deep enough to exhaust the stack. Evidence never needs
any of those, so each is refused here with an error naming it, never a traceback.

Example::

    loads(b'{"seq": 7}', "entry")          # -> {'seq': 7}
    loads(b'{"size": 1e400}', "entry")     # BoundedJSONError: entry: number 1e400 is not finite
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # no document of ours nests deeper than a handful of levels
MAX_DIGITS = 20  # an integer longer than this is no sequence number, size or time
MAX_INT = 2**63


class BoundedJSONError(ValueError):
    """A document refused before use; the text names the document and the problem."""


def loads(data: bytes | str, what: str, max_bytes: int | None = None) -> Any:
    """Parse ``data``; BoundedJSONError if it is too large, too deep, or holds an integer
    or float evidence cannot mean. Text that is not JSON raises what ``json.loads`` does
    (callers already name that in their own words)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise BoundedJSONError(f"{what}: {len(data)} bytes, more than {max_bytes}")

    def integer(text: str) -> int:
        if len(text.lstrip("-")) > MAX_DIGITS or abs(v := int(text)) > MAX_INT:
            raise BoundedJSONError(f"{what}: integer of {len(text)} digits is out of range")
        return v

    def real(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise BoundedJSONError(f"{what}: number {text[:20]} is not finite")
        return v

    def constant(text: str) -> Any:
        raise BoundedJSONError(f"{what}: {text} is not a JSON number")

    try:
        doc = json.loads(data, parse_int=integer, parse_float=real, parse_constant=constant)
    except RecursionError:
        raise BoundedJSONError(f"{what}: nested more than {MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise BoundedJSONError(f"{what}: nested more than {MAX_DEPTH} levels")
    return doc


def _depth(doc: Any) -> int:
    """How deep lists and objects nest (iterative: a deep document cannot exhaust the stack)."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((c, level + 1) for c in children)
    return deepest

"""What the store checks of an entry on its own, before anything is written: every field
it uses, of the type it uses it as. A wrong JSON type in one device's entry is a refusal of
that entry, named, and never an exception in a batch that holds other devices' segments.

Example::

    if (refusal := entry_refusal(entry)) is not None:
        raise refusal                      # Refused("malformed", "entry 7: 'prev' is ...")
"""

from __future__ import annotations

import json
import math
import re

from evidence.manifest import SegmentManifest, segment
from evidence.seal import Entry, SealError
from store.limits import Refused

_HASH = re.compile(r"[0-9a-f]{64}")
_TEXT_MAX = 200  # a device, key or session name longer than this is no name we gave
RESEALED = "resealed_file"  # the chain problem (and the entry's refusal) of a file sealed twice


def entry_refusal(e: Entry) -> Refused | None:
    """None if every field the store reads of ``e`` has its type (the payload's shape is
    checked by :meth:`Entry.from_json`), else the refusal naming the first that does not.
    A segment's manifest is read whole: the store names its file, blob and size."""
    pl = e.payload
    problem = (
        _text(pl["device"], "device")
        or _text(pl["key"], "key")
        or (None if _is_hash(pl["prev"]) else "'prev' is not a SHA-256 in hex")
        or (None if pl["session"] is None else _text(pl["session"], "session"))
        or _finite(pl["at"]["wall"], "at.wall")
        or _finite(pl["at"]["mono"], "at.mono")
    )
    if problem is None and e.kind == SegmentManifest.KIND:
        try:
            m = segment(e)
        except SealError as err:
            problem = str(err)
        else:
            problem = None if _is_hash(m.sha256) else "'sha256' is not a SHA-256 in hex"
            problem = problem or (None if m.size >= 0 else "'size' is negative")
    if problem is None:
        return None
    if not problem.startswith(f"entry {e.seq}:"):  # the manifest's own errors name it
        problem = f"entry {e.seq}: {problem}"
    return Refused("malformed", problem[:300])


def file_pattern(m: SegmentManifest) -> str:
    """A SQL LIKE pattern (escape ``\\``) matching a stored entry's canonical text if it
    seals ``m.file``: narrows the rows to read, each then read whole (:func:`seals_file`)."""
    needle = '"file":' + json.dumps(m.file, ensure_ascii=False)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def seals_file(stored: str, file: str) -> bool:
    """Whether a stored entry's text is a segment manifest sealing ``file``."""
    try:
        return segment(Entry.from_json(stored.encode())).file == file
    except SealError:
        return False


def _text(value: object, name: str) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{name!r} is not a string"
    if len(value) > _TEXT_MAX:
        return f"{name!r} is longer than {_TEXT_MAX} characters"
    return None


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _finite(value: object, name: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name!r} is not a number"
    try:
        ok = math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        ok = False
    return None if ok else f"{name!r} is not a finite number"

"""What a device sent, read for the store report without trusting it.

Ingest keeps a signed entry as it arrived once its signature verified, and a retained
status as the device published it: neither promises that a field holds what its name
says. The report reads entries with :func:`entry_of`, their bodies through their owner
(:mod:`evidence.manifest`) and the status through :func:`read_status`; what does not
read is said (``unreadable``), never a traceback, and never at the cost of the rest of
the report. :func:`shown` puts any such value on one line of text: control and
invisible characters escaped (a value cannot forge a line of the report), long ones
cut, saying how long they were.

Example::

    status, problem = read_status('{"online": "yes"}')
    problem                                 # "'online' is a string, not true or false"
    shown("cam\\nDevice bwc-9: chain ok")   # 'cam\\u000aDevice bwc-9: chain ok'
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from evidence import bounded_json
from evidence import protocol as p
from evidence.body_fields import ManifestError
from evidence.entries import Assignment, Install
from evidence.gaps import gap_body
from evidence.messages import Status, kind
from evidence.seal import Entry
from evidence.session_bodies import SessionOpen

TEXT_LIMIT = 80  # characters of one device-sent value on a line of the text report
LIST_LIMIT = 10  # values of one device-sent list on a line
# The store keeps a status as json.dumps writes it: a character outside ASCII takes up to
# 12 where the device's message took 4 bytes, so the stored form may be three times the
# largest message the store accepts. Anything larger was never a status: left unread.
STATUS_MAX = 4 * p.MAX_JSON


def shown(value: Any, limit: int = TEXT_LIMIT) -> str:
    """``value`` (a device's) as one line: a string as it is, anything else as JSON; cut
    at ``limit`` characters, its control and format characters escaped as ``\\uXXXX``."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    cut = text[:limit]
    out = "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in cut
    )
    return out + (f"… ({len(text)} characters)" if len(text) > limit else "")


def shown_list(values: list[Any], sep: str = ",", limit: int = LIST_LIMIT) -> str:
    """The first ``limit`` values, ``sep`` between them, and how many more there are."""
    head = sep.join(shown(v) for v in values[:limit])
    return head + (f" … and {len(values) - limit} more" if len(values) > limit else "")


def entry_of(stored: str, seq: int) -> Entry | str:
    """The store's copy of an entry, or why it does not read. Ingest kept it only once
    :meth:`evidence.seal.Entry.from_json` and its signature accepted it, so it is read
    again with the plain parser (a third of the cost: a report reads every entry) and
    only its shape checked: a payload whose body and time are objects."""
    try:
        doc = json.loads(stored, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        return f"entry {seq}: not a chain entry ({type(e).__name__}: {e})"
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not (
        isinstance(payload, dict)
        and type(payload.get("seq")) is int
        and isinstance(payload.get("kind"), str)
        and isinstance(payload.get("body"), dict)
        and isinstance(payload.get("at"), dict)
        and type(payload["at"].get("wall")) in (int, float)
    ):
        return f"entry {seq}: not a chain entry (its payload is not an entry's)"
    return Entry(payload=payload, signature=b"")


def _no_constant(text: str) -> None:
    raise ValueError(f"{text} is not a JSON number")


def session_open(e: Entry) -> SessionOpen | str:
    try:
        return SessionOpen.from_body(e.body)
    except ManifestError as err:
        return f"entry {e.seq}: {err}"


def room_of(e: Entry) -> str | None:
    """The room an assignment entry names; None if it names none, or does not read."""
    try:
        return Assignment.from_body(e.body).room or None
    except ManifestError:
        return None


def key_store_of(e: Entry) -> str:
    """Where an install entry says the device keeps its keys: "tpm", or "file" (said so,
    an entry from before the field existed, or one that does not read)."""
    try:
        return "tpm" if Install.from_body(e.body).key_store == "tpm" else "file"
    except ManifestError:
        return "file"


def gap_entry(e: Entry) -> Entry | str:
    """An interruption, its end or its explanation that reads as its owner says (what
    :func:`evidence.gaps.session_gaps` reads), or why it does not ("entry N: ...")."""
    try:
        gap_body(e)
    except ManifestError as err:
        return str(err)
    return e


def read_status(stored: str | None, size: int = 0) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of a retained status the report shows (:class:`evidence.messages.Status`
    says what they are), and what in it does not read; ``stored`` None: left unread,
    ``size`` characters long. A field that does not read is None, the others are kept."""
    if stored is None:
        return None, f"{size} characters, more than a status may have"
    try:
        doc = bounded_json.loads(stored, "status", max_bytes=STATUS_MAX)
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e})"
    except bounded_json.BoundedJSONError as e:
        return None, str(e)
    if not isinstance(doc, dict):
        return None, f"not an object but {kind(doc)}"
    fits, problems = Status.fitting(doc)
    backlog = fits.get("backlog")
    backlog = backlog if isinstance(backlog, dict) else {}
    status = {
        "online": fits.get("online"),
        "backlog": {"blobs": backlog.get("blobs"), "bytes": backlog.get("bytes")},
        "deadline": fits.get("deadline"),
        "oldest_unsynced_age": fits.get("oldest_unsynced_age"),
    }
    return status, "; ".join(problems) or None

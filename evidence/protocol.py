"""The sync protocol between a device and the agency store: its rules, topics and
framing, no I/O. Its messages are :mod:`evidence.messages`' (acks, refusals, the status)
and :mod:`evidence.blob_messages`' (a segment in chunks).

See docs/protocol.md. Everything here is shared by the device's uploader
(:mod:`agent.sync`) and the store (:mod:`store`), so both sides parse and decide alike.

Example::

    deadline_level(now, oldest_unsynced_end=now - 13 * HOUR)   # -> "warn"
    up("bwc-1", "blob", "init")            # -> "unbroken/d/bwc-1/blob/init"
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_args

from evidence import bounded_json

HOUR = 3600.0
DEADLINE_SECONDS = 24 * HOUR  # R-Art 17: stored at the agency within 24 hours
MAX_CHUNK = 4 * 1024 * 1024  # a chunk larger than this is refused (bounded memory)
MAX_JSON = 256 * 1024  # a control message or entry larger than this is refused
# A segment up to this size travels whole with its manifest entry: one message up, one
# receipt down (larger ones are chunked). The payload is the entry's bytes, then the
# media's; the MQTT v5 user property ENTRY_BYTES says where the entry ends.
WHOLE_LIMIT = MAX_CHUNK
ENTRY_BYTES = "entry-bytes"


def whole_segment(entry: bytes, media: bytes) -> tuple[bytes, dict[str, str]]:
    """A whole segment's payload and user properties."""
    return entry + media, {ENTRY_BYTES: str(len(entry))}


def split_whole_segment(payload: bytes, entry_bytes: str | None) -> tuple[bytes, bytes]:
    """(entry, media) of a whole segment's payload; ProtocolError if it does not say where
    the entry ends, or says it wrongly."""
    if entry_bytes is None or not entry_bytes.isdigit() or len(entry_bytes) > 7:
        raise ProtocolError(f"a segment without its manifest's length (property {ENTRY_BYTES!r})")
    n = int(entry_bytes)
    if not 0 < n <= min(MAX_JSON, len(payload)):
        raise ProtocolError(f"a manifest of {n} bytes in a segment message of {len(payload)}")
    return payload[:n], payload[n:]


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# Why the store refused a message: the ``code`` of a ``rejected`` reply or a refused ack.
REFUSALS = {
    "malformed": "the message does not follow the protocol",
    "too_large": "it declares more than any recording can be",
    "out_of_range": "a number (sequence, time) no device can mean",
    "unknown_blob": "a chunk or finish for an upload not announced, or expired: init again",
    "quota": "the device has too many uploads in progress: back off",
    "store_full": "the store cannot write (disk full): back off",
    "store_error": "the store failed on the message: back off, send again",
    "refused_entry": "a chain entry the store does not accept (see the reason)",
    "revoked": "received after the device was revoked: nothing new is accepted",
    "retired_key": "signed by a key after the rotation that retired it (a copy of the card?)",
    "key_not_yet": "signed by a key before the rotation that introduced it",
}
Refusal = Literal[
    "malformed",
    "too_large",
    "out_of_range",
    "unknown_blob",
    "quota",
    "store_full",
    "store_error",
    "refused_entry",
    "revoked",
    "retired_key",
    "key_not_yet",
]
assert set(get_args(Refusal)) == set(REFUSALS)  # one list of codes, spelled twice for types
BACK_OFF = {"quota": 30.0, "store_full": 60.0, "store_error": 10.0}  # seconds, by code


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong."""


def parse_json(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_JSON:
        raise ProtocolError(f"{what}: {len(payload)} bytes, more than {MAX_JSON}")
    try:
        doc = bounded_json.loads(payload, what)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"{what}: not JSON ({e})") from None
    except bounded_json.BoundedJSONError as e:
        raise ProtocolError(str(e)) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.match(value) is not None


def check_sha256(value: Any, what: str) -> str:
    if not is_sha256(value):
        raise ProtocolError(f"{what}: not a lowercase hex SHA-256")
    return value


def deadline(end_wall: float) -> float:
    """When a recording must be stored at the agency (R7)."""
    return end_wall + DEADLINE_SECONDS


def deadline_level(
    now: float, oldest_unsynced_end: float | None, warn_hours: tuple[float, float] = (12, 20)
) -> str:
    """``ok``, ``warn`` (past the first threshold), ``urgent`` (past the second) or
    ``overdue`` (past 24 h), from the age of the oldest recording not yet receipted."""
    if oldest_unsynced_end is None:
        return "ok"
    age = now - oldest_unsynced_end
    if age >= DEADLINE_SECONDS:
        return "overdue"
    if age >= warn_hours[1] * HOUR:
        return "urgent"
    if age >= warn_hours[0] * HOUR:
        return "warn"
    return "ok"


# -- topics -------------------------------------------------------------------------
# The device id in every topic equals the TLS certificate's subject: the broker's ACL lets a
# device publish only under its own id, and the store checks the id against every entry.

PREFIX = "unbroken"


def up(device: str, *parts: str) -> str:
    """Device → store: ``unbroken/d/<device>/...`` (entry, segment, blob/init,
    blob/<sha>/<offset>, blob/finish, status, answer)."""
    return "/".join((PREFIX, "d", device, *parts))


def reply(device: str, *parts: str) -> str:
    """Store → device: ``unbroken/r/<device>/...`` (ack, missing, receipt, rejected)."""
    return "/".join((PREFIX, "r", device, *parts))


def command(device: str, name: str) -> str:
    """Agency → device: ``unbroken/c/<device>/<name>``, agency-signed."""
    return "/".join((PREFIX, "c", device, name))


def answer(device: str, nonce: str) -> str:
    """Store → case system: ``unbroken/a/<device>/<nonce>``, a device's signed answer to
    the agency command ``nonce`` (applied, or refused with the reason), as it sent it."""
    return "/".join((PREFIX, "a", device, nonce))


def panel(room: str, *parts: str) -> str:
    """Room panel ⇄ room controller: ``unbroken/p/<room>/...`` — ``door``, ``key`` and
    ``panel`` from the panel, ``state`` (retained) from the controller."""
    return "/".join((PREFIX, "p", room, *parts))


def parse_up(topic: str) -> tuple[str, list[str]]:
    """``unbroken/d/<device>/rest...`` → (device, rest); ProtocolError otherwise."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != PREFIX or parts[1] != "d" or not parts[2]:
        raise ProtocolError(f"topic {topic!r} is not under {PREFIX}/d/<device>/")
    return parts[2], parts[3:]

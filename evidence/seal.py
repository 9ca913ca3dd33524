"""Chain entries: canonical encoding, hashing, Ed25519 seals.

Every segment manifest and every event of a device is an *entry* in one per-device chain.
An entry's payload names its predecessor's hash, so a deleted, altered or reordered entry
breaks the chain for anyone holding the device's public key (R1).

Example::

    key = nacl.signing.SigningKey.generate()
    sealer = Sealer(key, device_id="bwc-1", last=None)
    entry = sealer.seal("boot", {"reason": "power_on"}, Moment(1.7e9, 5.0, synced=True))
    check_signature(entry, key.verify_key)   # raises SealError if forged
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing
import rfc8785

from evidence import bounded_json

FORMAT_VERSION = 1
GENESIS = "0" * 64

# Every kind of entry the chain knows. Unknown kinds are refused by the verifier, so a
# foreign file cannot pass for evidence.
KINDS = frozenset(
    {
        "boot",  # the agent started (reason, software version)
        "config",  # effective recording settings changed
        "session_open",
        "segment",  # a sealed media segment: the manifest
        "marker",  # a typed act on the timeline (R2)
        "session_close",
        "install",  # a provisioning bundle was installed (provenance starts here)
        "assignment",  # an agency-signed assignment (officer badges, room) took effect
        "key_rotation",  # signed by the old key, names the new key that signs what follows
        "interruption",  # a gap in recording inside a session: cause, start, (end), affects
        "interruption_end",  # the gap closed: recording resumed
        "explanation",  # a gap explained: a voice clip, or a statement by two officers (R6)
        "event",  # something worth knowing that is not a gap (GNSS fix lost, disk warning)
        "shutdown",  # a clean stop: its absence before a boot means power was lost
    }
)


class SealError(ValueError):
    """An entry is malformed or its signature does not verify."""


@dataclass(frozen=True)
class Moment:
    """When something happened: wall clock (shown to people) and monotonic (for order)."""

    wall: float
    mono: float
    synced: bool

    def as_dict(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 6), "mono": round(self.mono, 6), "synced": self.synced}


@dataclass(frozen=True)
class Entry:
    """A signed chain entry as stored and transmitted."""

    payload: dict[str, Any]
    signature: bytes

    @property
    def seq(self) -> int:
        return int(self.payload["seq"])

    @property
    def kind(self) -> str:
        return str(self.payload["kind"])

    @property
    def session(self) -> str | None:
        s = self.payload.get("session")
        return None if s is None else str(s)

    @property
    def body(self) -> dict[str, Any]:
        body = self.payload["body"]
        assert isinstance(body, dict)
        return body

    @functools.cached_property
    def signed_bytes(self) -> bytes:
        """The canonical payload: what is signed and hashed (made once per entry)."""
        return canonical(self.payload)

    @functools.cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.signed_bytes).hexdigest()

    def to_json(self) -> bytes:
        doc = {"payload": self.payload, "signature": base64.b64encode(self.signature).decode()}
        return canonical(doc)

    @staticmethod
    def from_json(data: bytes) -> Entry:
        """Parse a stored entry; raises SealError naming what is wrong."""
        try:
            doc = bounded_json.loads(data, "chain entry")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SealError(f"not a chain entry (invalid JSON: {e})") from None
        except bounded_json.BoundedJSONError as e:
            raise SealError(f"not a chain entry ({e})") from None
        if not isinstance(doc, dict) or set(doc) != {"payload", "signature"}:
            raise SealError("not a chain entry (expected exactly 'payload' and 'signature')")
        payload, sig = doc["payload"], doc["signature"]
        _check_payload_shape(payload)
        try:
            signature = base64.b64decode(sig, validate=True)
        except (ValueError, TypeError):
            raise SealError("signature is not base64") from None
        if len(signature) != 64:
            raise SealError("signature is not 64 bytes")
        return Entry(payload=payload, signature=signature)


def canonical(obj: Any) -> bytes:
    """RFC 8785 JSON canonical form: the bytes that are hashed and signed.

    For our payloads (ASCII keys, strings, integers, floats between 1e-4 and 1e16) the
    sorted, compact output of the json module is byte-for-byte RFC 8785 once integral
    floats are written as integers, and several times faster than a general
    implementation; anything else goes through the rfc8785 package.
    """
    try:
        plain = _plain(obj)
    except _NotPlain:
        return bytes(rfc8785.dumps(obj))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _NotPlain(Exception):
    pass


def _plain(obj: Any) -> Any:
    """``obj`` as json.dumps must see it to write RFC 8785, or _NotPlain. Dispatches on the
    exact type: this runs for every entry sealed and every entry verified."""
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is int:
        if -(2**53) <= obj <= 2**53:
            return obj
        raise _NotPlain
    if t is float:
        if obj.is_integer() and abs(obj) <= 2**53:
            return int(obj)  # RFC 8785 writes 2.0 as 2
        if 1e-4 <= abs(obj) < 1e16:  # where Python does not switch to exponent form
            return obj
        raise _NotPlain
    if t is dict:
        out = {}
        for k, v in obj.items():
            if type(k) is not str or not k.isascii():
                raise _NotPlain  # RFC 8785 sorts by UTF-16 units, Python by code points
            out[k] = _plain(v)
        return out
    if t is list or t is tuple:
        return [_plain(v) for v in obj]
    raise _NotPlain


def key_id(verify_key: nacl.signing.VerifyKey) -> str:
    """A short stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def check_signature(entry: Entry, verify_key: nacl.signing.VerifyKey) -> None:
    try:
        verify_key.verify(entry.signed_bytes, entry.signature)
    except nacl.exceptions.BadSignatureError:
        raise SealError("signature does not verify with the device key") from None


class Sealer:
    """Appends entries to a device's chain. Holds only the chain head; the journal persists.

    ``last`` is the newest entry already in the chain (None for a new device), so a
    restarted agent continues the same chain.
    """

    def __init__(
        self, signing_key: nacl.signing.SigningKey, device_id: str, last: Entry | None
    ) -> None:
        self._key = signing_key
        self._raw_key = signing_key._signing_key  # libsodium's 64-byte secret key
        self.device_id = device_id
        self.key_id = key_id(signing_key.verify_key)
        self._seq = last.seq if last else 0
        self._prev = last.hash if last else GENESIS

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The key in force (after a rotation, the new one)."""
        return self._key

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._prev

    def seal(
        self, kind: str, body: dict[str, Any], at: Moment, session: str | None = None
    ) -> Entry:
        if kind not in KINDS:
            raise SealError(f"unknown entry kind {kind!r}")
        payload = {
            "v": FORMAT_VERSION,
            "device": self.device_id,
            "key": self.key_id,
            "seq": self._seq + 1,
            "prev": self._prev,
            "kind": kind,
            "session": session,
            "at": at.as_dict(),
            "body": body,
        }
        data = canonical(payload)
        # the binding directly: SigningKey.sign wraps the same call in objects we don't need
        signature = nacl.bindings.crypto_sign(data, self._raw_key)[:64]
        entry = Entry(payload=payload, signature=signature)
        entry.__dict__["hash"] = hashlib.sha256(data).hexdigest()  # fill the cache: hash once
        self._seq, self._prev = entry.seq, entry.hash
        return entry

    def rotate(self, new_key: nacl.signing.SigningKey, at: Moment) -> Entry:
        """Hand the chain to a new key: the rotation entry is signed by the old key and names
        the new one, so a verifier pinned to the old key can follow."""
        body = {
            "new_key": bytes(new_key.verify_key).hex(),
            "new_key_id": key_id(new_key.verify_key),
        }
        entry = self.seal("key_rotation", body, at)
        self._key, self.key_id = new_key, key_id(new_key.verify_key)
        self._raw_key = new_key._signing_key
        return entry


_FIELDS = {"v", "device", "key", "seq", "prev", "kind", "session", "at", "body"}


def _check_payload_shape(p: Any) -> None:
    if not isinstance(p, dict):
        raise SealError("payload is not an object")
    missing, extra = _FIELDS - set(p), set(p) - _FIELDS
    if missing or extra:
        raise SealError(f"payload fields wrong (missing {sorted(missing)}, extra {sorted(extra)})")
    if p["v"] != FORMAT_VERSION:
        raise SealError(f"unsupported format version {str(p['v'])[:40]!r}")
    if not isinstance(p["seq"], int) or isinstance(p["seq"], bool) or p["seq"] < 1:
        raise SealError("seq is not a positive integer")
    if not isinstance(p["kind"], str) or p["kind"] not in KINDS:  # a list is unhashable
        raise SealError(f"unknown entry kind {str(p['kind'])[:40]!r}")
    if not isinstance(p["body"], dict) or not isinstance(p["at"], dict):
        raise SealError("body and at must be objects")
    for f in ("wall", "mono"):
        if not isinstance(p["at"].get(f), int | float):
            raise SealError(f"at.{f} is not a number")

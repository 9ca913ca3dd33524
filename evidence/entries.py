"""The bodies of the entries that are not media nor sessions, as types: built and parsed here.

:mod:`evidence.manifest` owns segments and :mod:`evidence.session_bodies` sessions,
interruptions, voice explanations and markers; this module owns the rest of
:data:`evidence.seal.KINDS`: ``boot``, ``config``, ``shutdown``, ``install``,
``assignment``, ``key_rotation``, ``event`` and the written ``explanation``. Each type
turns into exactly the dict devices seal (:meth:`to_body`: the bytes of every chain sealed
so far stay as they are) and back (:meth:`from_body`, which type-checks every field it
keeps and raises :class:`ManifestError` naming the entry kind
and the field). :func:`body_of` reads any entry's body through its owner.

Example::

    w = WrittenExplanation.from_body(entry.body)   # ManifestError if malformed
    w.interruption, [a.badge for a in w.statement.attestations]
    chain.seal_body(Shutdown("battery"))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from evidence.body_fields import Fields, ManifestError
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.session_bodies import (
    CaseCommand,
    Interruption,
    InterruptionEnd,
    Marker,
    SessionClose,
    SessionOpen,
    VoiceExplanation,
)

_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")  # an Ed25519 public key, as key_rotation names it


def _text_or_none(f: Fields, key: str) -> str | None:
    return f.get(key, str, optional=True)


# -- the device's life ------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """The agent started: its software and the digest of its settings; ``tool``: a
    command (``agent explain``) that writes the chain while the recorder is stopped."""

    software: str | None = None
    config_sha256: str | None = None
    tool: str | None = None

    KIND = "boot"

    def to_body(self) -> dict[str, Any]:
        body = {"software": self.software, "config_sha256": self.config_sha256}
        return {k: v for k, v in (body | {"tool": self.tool}).items() if v is not None}

    @staticmethod
    def from_body(body: object) -> Boot:
        f = Fields(body, "boot")
        return Boot(*(_text_or_none(f, k) for k in ("software", "config_sha256", "tool")))


@dataclass(frozen=True)
class Config:
    """The effective recording settings changed: their digest and the settings."""

    sha256: str
    settings: dict[str, Any]

    KIND = "config"

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "settings": dict(self.settings)}

    @staticmethod
    def from_body(body: object) -> Config:
        f = Fields(body, "config")
        return Config(f.get("sha256", str), dict(f.get("settings", dict)))


@dataclass(frozen=True)
class Shutdown:
    """A clean stop and why: its absence before a boot means power was lost."""

    reason: str

    KIND = "shutdown"

    def to_body(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @staticmethod
    def from_body(body: object) -> Shutdown:
        return Shutdown(Fields(body, "shutdown").get("reason", str))


@dataclass(frozen=True)
class Install:
    """A provisioning bundle was installed: which, from which agency, for which device,
    its broker, and where the device key is kept (None: sealed before that was said)."""

    bundle_sha256: str
    agency_key_id: str
    device_id: str
    broker: dict[str, Any]
    key_store: str | None = None

    KIND = "install"

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "bundle_sha256": self.bundle_sha256,
            "agency_key_id": self.agency_key_id,
            "device_id": self.device_id,
            "broker": dict(self.broker),
        }
        return body if self.key_store is None else body | {"key_store": self.key_store}

    @staticmethod
    def from_body(body: object) -> Install:
        f = Fields(body, "install")
        return Install(
            f.get("bundle_sha256", str),
            f.get("agency_key_id", str),
            f.get("device_id", str),
            dict(f.get("broker", dict)),
            _text_or_none(f, "key_store"),
        )


@dataclass(frozen=True)
class Assignment:
    """An agency-signed assign or unassign took effect: who carries the device (badges,
    name, unit) or which room it serves, and the command's nonce, times and agency."""

    command: str
    badges: list[str]
    name: str | None
    unit: str | None
    room: str | None
    nonce: str
    issued: float
    agency: str
    expires: float

    KIND = "assignment"

    def to_body(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "badges": list(self.badges),
            "name": self.name,
            "unit": self.unit,
            "room": self.room,
            "nonce": self.nonce,
            "issued": self.issued,
            "agency": self.agency,
            "expires": self.expires,
        }

    @staticmethod
    def from_body(body: object) -> Assignment:
        f = Fields(body, "assignment")
        return Assignment(
            f.get("command", str),
            f.strings("badges") or [],
            _text_or_none(f, "name"),
            _text_or_none(f, "unit"),
            _text_or_none(f, "room"),
            f.get("nonce", str),
            f.get("issued", float),
            f.get("agency", str),
            f.get("expires", float),
        )


@dataclass(frozen=True)
class KeyRotation:
    """The chain hands over to a new key: signed by the old one, naming the new one (its
    64 hex digits) and its key id."""

    new_key: str
    new_key_id: str

    KIND = "key_rotation"

    def to_body(self) -> dict[str, Any]:
        return {"new_key": self.new_key, "new_key_id": self.new_key_id}

    def verify_key(self) -> nacl.signing.VerifyKey:
        return nacl.signing.VerifyKey(bytes.fromhex(self.new_key))

    @staticmethod
    def from_body(body: object) -> KeyRotation:
        f = Fields(body, "key_rotation")
        new_key = f.get("new_key", str)
        if not _HEX_KEY.match(new_key):
            raise ManifestError("key_rotation: 'new_key' is not a public key (64 hex digits)")
        return KeyRotation(new_key, f.get("new_key_id", str))


# What each event type the devices seal carries beside its type. A type not listed (a
# newer device's) keeps its fields as sealed, unchecked: it is told, never refused.
EVENT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "storage_warning": {"used": float},
    "storage_degraded": {"used": float},
    "storage_restored": {"used": float},
    "gnss_lost": {},
    "gnss_regained": {},
    "encoder_fallback": {"wanted": str, "used": str, "reason": str},
}
_LOAD: dict[str, type | tuple[type, ...]] = {"level": int, "bitrate": int, "reason": str}
_LOAD |= {"picture_rate": float, "busy": float}
EVENT_FIELDS |= {"load_reduced": _LOAD, "load_restored": _LOAD}
CASE = "case"  # the case system named the session opened at the panel: a CaseCommand


@dataclass(frozen=True)
class Event:
    """Something worth knowing that is not a gap: its ``type`` and what that type says."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)

    KIND = "event"

    def to_body(self) -> dict[str, Any]:
        return {"type": self.type, **self.fields}

    @staticmethod
    def case_named(case: CaseCommand) -> Event:
        """The case system named a session opened at the panel."""
        return Event(CASE, case.to_body())

    @property
    def case_command(self) -> CaseCommand | None:
        """What a ``case`` event says (None: another type)."""
        if self.type != CASE:
            return None
        return CaseCommand.from_body(Fields(self.fields, "event"))

    @staticmethod
    def from_body(body: object) -> Event:
        f = Fields(body, "event")
        kind = f.get("type", str)
        if kind == CASE:
            if CaseCommand.from_body(f) is None:
                raise ManifestError("event: a case event names no 'command'")
            known: Mapping[str, object] | None = dict.fromkeys(("case", "person", "command"))
        else:
            known = EVENT_FIELDS.get(kind)
            for key, want in (known or {}).items():
                f.get(key, want)
        if known is not None and (extra := sorted(set(f.body) - {"type", *known})):
            raise ManifestError(f"event: a {kind} event has no field {extra[0]!r}")
        return Event(kind, {k: v for k, v in f.body.items() if k != "type"})


# -- the written explanation ------------------------------------------------------------


@dataclass(frozen=True)
class Attested:
    """One officer who attested a statement, and how (the proof is never written; None:
    not said, which devices always do: only the badges count)."""

    badge: str
    method: str | None = None

    def to_body(self) -> dict[str, Any]:
        return {"badge": self.badge} | ({} if self.method is None else {"method": self.method})


@dataclass(frozen=True)
class Statement:
    """A written statement: why recording stopped, and the officers who attest it."""

    reason: str
    attestations: tuple[Attested, ...]

    def to_body(self) -> dict[str, Any]:
        attested = [a.to_body() for a in self.attestations]
        return {"reason": self.reason, "attestations": attested}

    @staticmethod
    def from_body(body: object, what: str) -> Statement:
        f = Fields(body, what)
        attested = []
        for i, raw in enumerate(f.get("attestations", list)):
            a = Fields(raw, f"{what}.attestations[{i}]")
            attested.append(Attested(a.get("badge", str), _text_or_none(a, "method")))
        return Statement(f.get("reason", str), tuple(attested))


@dataclass(frozen=True)
class WrittenExplanation:
    """Gap ``interruption`` explained in writing by officers (R6): a gap that never
    resumed has no clip to speak in. :func:`evidence.gaps.written_statement_problem`
    says whether the statement counts."""

    interruption: str
    statement: Statement

    KIND = "explanation"

    def to_body(self) -> dict[str, Any]:
        return {
            "interruption": self.interruption,
            "kind": "written",
            "statement": self.statement.to_body(),
        }

    @staticmethod
    def from_body(body: object) -> WrittenExplanation:
        f = Fields(body, "explanation")
        if f.get("kind", str) != "written":
            raise ManifestError("explanation: not a written explanation")
        statement = Statement.from_body(f.get("statement", dict), "explanation.statement")
        return WrittenExplanation(f.get("interruption", str), statement)


def explanation(body: object) -> VoiceExplanation | WrittenExplanation:
    """An explanation's body, spoken or written (ManifestError: neither, or malformed)."""
    kind = Fields(body, "explanation").get("kind", str)
    if kind == "voice":
        return VoiceExplanation.from_body(body)
    if kind == "written":
        return WrittenExplanation.from_body(body)
    raise ManifestError(f"explanation: 'kind' is {kind[:40]!r}, neither voice nor written")


# -- any entry --------------------------------------------------------------------------

Body = (
    SegmentManifest
    | SessionOpen
    | SessionClose
    | Interruption
    | InterruptionEnd
    | VoiceExplanation
    | WrittenExplanation
    | Marker
    | Boot
    | Config
    | Shutdown
    | Install
    | Assignment
    | KeyRotation
    | Event
)

_OWNERS: dict[str, Any] = {
    t.KIND: t.from_body
    for t in (SegmentManifest, SessionOpen, SessionClose, Interruption, InterruptionEnd)
}
_OWNERS |= {t.KIND: t.from_body for t in (Marker, Boot, Config, Shutdown, Install)}
_OWNERS |= {t.KIND: t.from_body for t in (Assignment, KeyRotation, Event)}
_OWNERS["explanation"] = explanation


def body_of(entry: Entry) -> Body:
    """Any entry's body as its type, every field checked; ManifestError names the entry
    and the field."""
    owner = _OWNERS.get(entry.kind)
    try:
        if owner is None:
            raise ManifestError(f"no entry is a {entry.kind[:40]!r}")
        return owner(entry.body)
    except ManifestError as e:
        raise ManifestError(f"entry {entry.seq}: {e}") from None

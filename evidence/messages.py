"""The store's ``ack``, ``rejected`` and ``resend`` replies and a device's retained
status: each built and parsed here only, by both sides of the wire (a segment sent in
chunks: :mod:`evidence.blob_messages`).

Every message is a :class:`Message` (strict: no field of another type is coerced, no field
nobody defined is taken), and every refusal is a :class:`~evidence.protocol.ProtocolError`
worded by :func:`describe`: the message, the field, what it holds and what it should.

Example::

    Rejected.of("unbroken/d/bwc-1/entry", "quota", "9 uploads").to_bytes()
    Status.parse(b'{"device":"bwc-1","online":"yes"}')
    # ProtocolError: status: 'online' is a string, not true or false
"""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from evidence import protocol as p
from evidence.models import Strict

TOPIC_CHARS = 300  # of the refused message's topic, echoed back
REASON_CHARS = 500  # of a refusal's reason
RECORDER_FIELDS = 64  # a recorder says about 20 things of itself (agent.recorder.status)
FIELD_NAME_CHARS = 64

M = TypeVar("M", bound=BaseModel)
Count = Annotated[int, Field(ge=0, le=2**53)]


class Message(Strict):
    model_config = ConfigDict(strict=True)

    def to_bytes(self) -> bytes:
        return p.dumps(self.model_dump())


def validated(model: type[M], doc: dict[str, Any], what: str) -> M:
    """``doc`` as a ``model``; ProtocolError naming each field that does not fit."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise p.ProtocolError(f"{what}: {describe(e.errors())}") from None


def describe(errors: list[ErrorDetails]) -> str:
    """The one wording of what does not fit a message: ``'backlog.blobs' is a string, not
    an integer``; the others joined with ``; ``."""
    return "; ".join(_problem(err) for err in errors)


_EXPECTED = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "model_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
}
_KINDS = {str: "a string", int: "a number", float: "a number", dict: "an object"}
_KINDS |= {list: "a list", type(None): "null"}


def kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if isinstance(value, bool):
        return json.dumps(value)
    return _KINDS.get(type(value), type(value).__name__)


def _problem(err: ErrorDetails) -> str:
    where = ".".join(str(part) for part in err["loc"])
    field = f"'{where}'" if where else "the message"
    if err["type"] in _EXPECTED:
        return f"{field} is {kind(err['input'])}, not {_EXPECTED[err['type']]}"
    if err["type"] == "literal_error":
        value = err["input"]
        said = repr(value[:40]) if isinstance(value, str) else kind(value)
        return f"{field} is {said}, not {err.get('ctx', {}).get('expected')}"
    if err["type"] == "missing":
        return f"{field} is missing"
    if err["type"] == "extra_forbidden":
        return f"{field} is no field of this message"
    return f"{field}: {err['msg'].removeprefix('Value error, ')}"


# -- store → device ------------------------------------------------------------------


class Rejected(Message):
    """The store refused a message: ``code`` (a key of :data:`evidence.protocol.REFUSALS`,
    empty from a store older than the codes) says what to do about it, ``reason`` why,
    ``topic`` which message it was."""

    reason: str = Field(max_length=REASON_CHARS)
    code: Literal[p.Refusal, ""] = ""
    topic: str = Field("", max_length=TOPIC_CHARS)

    @property
    def text(self) -> str:
        return self.reason

    @staticmethod
    def of(topic: str, code: str, reason: str) -> Rejected:
        """The store's reply (an unknown code: see :func:`_known`)."""
        code, reason = _known(code, reason)
        doc = {"topic": topic[:TOPIC_CHARS], "reason": reason[:REASON_CHARS], "code": code}
        return Rejected.model_validate(doc)

    @staticmethod
    def parse(payload: bytes) -> Rejected:
        """A ``rejected`` reply: JSON from a store of today, plain text from the first
        stores (taken as the reason). ProtocolError for JSON that is no refusal."""
        try:
            doc = p.parse_json(payload, "rejected")
        except p.ProtocolError:  # an older store's plain text
            text = payload[: 4 * REASON_CHARS].decode("utf-8", "replace")
            return Rejected(reason=text[:REASON_CHARS])
        return validated(Rejected, doc, "rejected")


def _known(code: str, reason: str) -> tuple[str, str]:
    """A refusal's code and reason; a code not in REFUSALS is the store's own fault, said
    as such rather than sent as a code no device knows."""
    if code not in get_args(p.Refusal):
        return "store_error", f"{code}: {reason}"
    return code, reason


class Ack(Message):
    """The store's answer to a chain entry: accepted (``ok``; ``reason`` may say how: a
    duplicate, a fork kept) or refused, with the ``code`` (a key of
    :data:`evidence.protocol.REFUSALS`) and the reason."""

    seq: Annotated[int, Field(ge=1, le=2**53)]
    ok: bool
    reason: str = Field("", max_length=REASON_CHARS)
    code: Literal[p.Refusal, ""] = ""

    @staticmethod
    def refused(seq: int, code: str, reason: str) -> Ack:
        """The store's refusal of entry ``seq`` (a code as :meth:`Rejected.of` takes it)."""
        code, reason = _known(code, reason)
        doc = {"seq": seq, "ok": False, "reason": reason[:REASON_CHARS], "code": code}
        return Ack.model_validate(doc)

    @staticmethod
    def parse(payload: bytes) -> Ack:
        return validated(Ack, p.parse_json(payload, "ack"), "ack")


class Resend(Message):
    """A store worker has just taken this device over (its predecessor died, or the store
    started): what was in flight may have gone nowhere, send it again in ``retry`` seconds
    (0: now)."""

    retry: int = Field(0, ge=0, le=int(p.HOUR))  # whole seconds: stores send {"retry":0}

    @staticmethod
    def parse(payload: bytes) -> Resend:
        return validated(Resend, p.parse_json(payload, "resend"), "resend")


# -- device → store ------------------------------------------------------------------


class Backlog(Message):
    """What the device has yet to get stored at the agency."""

    entries: Count  # chain entries not acknowledged
    blobs: Count  # segments not receipted
    bytes: Count  # their size
    oldest_unsynced_end: float | None  # the end of the oldest of them (its deadline runs)


class Status(Message):
    """A device's retained status (``unbroken/d/<device>/status``). ``online`` False with
    nothing else is the broker's will for a device gone. Otherwise the backlog, the age of
    its oldest recording and that recording's deadline level (R7), and, while online, the
    recorder's state (:meth:`agent.recorder.Recorder.status`): flat beside these on the
    wire, kept as it came in ``recorder`` (the store reads none of it)."""

    device: str = Field(min_length=1, max_length=FIELD_NAME_CHARS)
    online: bool
    backlog: Backlog | None = None  # None: the will, which knows no backlog
    oldest_unsynced_age: float | None = None  # seconds; None: nothing unsynced
    # The level as the device computed it (protocol.deadline_level): shown, never decided by.
    deadline: str | None = None
    recorder: dict[str, Any] = Field(default_factory=dict)

    @field_validator("recorder")
    @classmethod
    def _bounded(cls, fields: dict[str, Any]) -> dict[str, Any]:
        if len(fields) > RECORDER_FIELDS:
            raise ValueError(f"{len(fields)} recorder fields, more than {RECORDER_FIELDS}")
        if long := [k for k in fields if len(k) > FIELD_NAME_CHARS]:
            raise ValueError(f"a field name of {len(long[0])} characters")
        return fields

    @staticmethod
    def parse(payload: bytes) -> Status:
        return Status.of(p.parse_json(payload, "status"))

    @staticmethod
    def of(doc: dict[str, Any]) -> Status:
        """A status document as sent; ProtocolError naming what does not fit."""
        return validated(Status, _nested(doc), "status")

    @staticmethod
    def fitting(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``doc`` without the fields that do not fit a status, and what they are, for a
        reader that takes what it can (the store report): a field absent is no problem,
        an older device or the will may not have it."""
        try:
            Status.model_validate(_nested(doc))
            return doc, []
        except ValidationError as e:
            errors = [err for err in e.errors() if err["type"] != "missing"]
        kept = copy.deepcopy(doc)
        for err in errors:
            loc = err["loc"][1:] if err["loc"][:1] == ("recorder",) else err["loc"]
            _drop(kept, [str(part) for part in loc])
        return kept, [_problem(err) for err in errors]

    def to_doc(self) -> dict[str, Any]:
        """The document on the wire: the recorder's fields flat, as devices always sent it;
        the will's two fields alone."""
        doc: dict[str, Any] = {"device": self.device, "online": self.online, **self.recorder}
        if self.backlog is not None:
            doc["backlog"] = self.backlog.model_dump()
            doc["oldest_unsynced_age"] = self.oldest_unsynced_age
            doc["deadline"] = self.deadline
        return doc

    def to_bytes(self) -> bytes:
        return p.dumps(self.to_doc())


_STATUS_FIELDS = frozenset(Status.model_fields) - {"recorder"}


def _nested(doc: dict[str, Any]) -> dict[str, Any]:
    """The wire's flat document as the model's: what a status does not define is the
    recorder's."""
    fields = {k: v for k, v in doc.items() if k in _STATUS_FIELDS}
    return {**fields, "recorder": {k: v for k, v in doc.items() if k not in _STATUS_FIELDS}}


def _drop(doc: dict[str, Any], path: list[str]) -> None:
    """Remove the value at ``path`` (keys of nested objects), if it is there."""
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if path and isinstance(node, dict):
        node.pop(path[-1], None)

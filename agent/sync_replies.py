"""What a message from the store or the agency means to the uploader.

:func:`read_reply` reads what arrived on the device's topics (an agency command, an ack,
what a blob lacks, a receipt, a refusal, a request to resend) into one of the
:data:`Reply` types; :func:`receipt_refusal` is the rule that a receipt frees only footage
this device's journal says it sealed. Parsing the messages themselves is
:mod:`evidence.protocol`'s and :mod:`evidence.messages`' job; this module only says which
is which, without sockets or disks.

Example::

    read_reply("BC-1", "unbroken/v1/dev/BC-1/ack", payload, agency_key)  # -> Ack(...)
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.signing

from evidence import protocol as p
from evidence.blob_messages import Missing
from evidence.messages import Rejected, Resend
from evidence.receipt import ReceiptClaim, check_receipt
from evidence.store_acks import OpenedAck, open_ack


@dataclass(frozen=True)
class CommandArrived:
    """An agency command, handed on unverified: the recorder checks and applies it."""

    payload: bytes


@dataclass(frozen=True)
class Receipt:
    """A receipt that verified with the agency key and is well-formed. Whether it is about
    footage this device sealed is :func:`receipt_refusal`'s question."""

    claim: ReceiptClaim
    data: bytes

    @property
    def sha256(self) -> str:
        return self.claim.sha256

    @property
    def seq(self) -> int:
        return self.claim.entry_seq


@dataclass(frozen=True)
class Sealed:
    """What the device's own journal holds at a sequence number: a segment's seal."""

    sha256: str
    size: int
    entry_hash: str


def receipt_refusal(claim: ReceiptClaim, sealed: Sealed | None) -> str | None:
    """Why a receipt must not free any footage (None: it names exactly what this device
    sealed at ``entry_seq``). A receipt frees only what the journal says it sealed.

    Example::

        receipt_refusal(claim, Sealed(claim.sha256, claim.size, claim.entry_hash))  # None
        receipt_refusal(claim, None)  # 'entry 8 is not a sealed segment on this device'
    """
    if sealed is None:
        return f"entry {claim.entry_seq} is not a sealed segment on this device"
    for name, mine in (
        ("sha256", sealed.sha256),
        ("size", sealed.size),
        ("entry_hash", sealed.entry_hash),
    ):
        if getattr(claim, name) != mine:
            return f"its {name} is not the one sealed at entry {claim.entry_seq}"
    return None


Reply = CommandArrived | OpenedAck | Missing | Receipt | Rejected | Resend | None


def is_panel_input(topic: str, room: str | None) -> bool:
    """Whether a message is the room panel's (door, key): the recorder decides those."""
    return room is not None and topic.startswith(p.panel(room, ""))


def read_reply(
    device: str, topic: str, payload: bytes, agency_key: nacl.signing.VerifyKey
) -> Reply:
    """What a message from the store or the agency means (None: nothing we know).
    ProtocolError or ReceiptError for a malformed one."""
    if topic.startswith(p.command(device, "")):
        return CommandArrived(payload)
    what = topic.rsplit("/", 1)[-1]
    if what == "ack":
        return open_ack(payload, agency_key, device=device)
    if what == "missing":
        return Missing.parse(payload)
    if what == "receipt":
        receipt = check_receipt(payload, agency_key, device=device)
        return Receipt(ReceiptClaim.of(receipt), payload)
    if what == "rejected":
        return Rejected.parse(payload)
    if what == "resend":
        return Resend.parse(payload)
    return None

"""MQTT topics of the fleet, and who may use which: the broker's ACL is built from these.

A device publishes only under ``unbroken/d/<device>/#`` and reads its signed commands
(``unbroken/c/<device>/#``) and the store's replies (``unbroken/r/<device>/#``). The store
reads every device (each worker the devices it serves) and writes commands and
replies. A room panel and the room controller serving that room share
``unbroken/p/<room>/#`` and nothing else. The store publishes each device's signed
answer to an agency command on ``unbroken/a/<device>/<nonce>`` for the case system.
Message topics themselves are built by :mod:`evidence.protocol` (``up``, ``reply``,
``command``, ``answer``), re-exported here.

Example::

    up("bwc-1", "entry")            # 'unbroken/d/bwc-1/entry'
    panel("101", "state")           # 'unbroken/p/101/state'
"""

from __future__ import annotations

from evidence.protocol import PREFIX, answer, command, panel, reply, up

__all__ = [
    "PREFIX",
    "answer",
    "answers_read",
    "command",
    "device_reads",
    "device_writes",
    "panel",
    "panel_filter",
    "reply",
    "store_reads",
    "store_writes",
    "up",
]

DEVICES = f"{PREFIX}/d"  # device → store
COMMANDS = f"{PREFIX}/c"  # agency → device (signed)
REPLIES = f"{PREFIX}/r"  # store → device
ANSWERS = f"{PREFIX}/a"  # store → case system: devices' answers to agency commands
PANELS = f"{PREFIX}/p"  # room panel ⇄ room controller


def device_writes(device: str) -> str:
    return f"{DEVICES}/{device}/#"


def device_reads(device: str) -> list[str]:
    return [f"{COMMANDS}/{device}/#", f"{REPLIES}/{device}/#"]


def store_reads() -> str:
    return f"{DEVICES}/#"


def store_writes() -> list[str]:
    return [f"{COMMANDS}/#", f"{REPLIES}/#", f"{ANSWERS}/#"]


def answers_read() -> str:
    """What a case system reads (with a store certificate of its own): the answers."""
    return f"{ANSWERS}/#"


def panel_filter(room: str) -> str:
    return f"{PANELS}/{room}/#"

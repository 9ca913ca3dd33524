"""MQTT topics of the fleet, and who may use which: the broker's ACL is built from these.

A device publishes only under ``unbroken/d/<device>/#`` and reads its signed commands
(``unbroken/c/<device>/#``) and the store's replies (``unbroken/r/<device>/#``). The store
reads every device (each worker the devices it serves) and writes commands and
replies. A room panel and the room controller serving that room share
``unbroken/p/<room>/#`` and nothing else. Message topics themselves are built by
:mod:`evidence.protocol` (``up``, ``reply``, ``command``), re-exported here.

Example::

    up("bwc-1", "entry")            # 'unbroken/d/bwc-1/entry'
    panel("101", "state")           # 'unbroken/p/101/state'
"""

from __future__ import annotations

from evidence.protocol import PREFIX, command, panel, reply, up

__all__ = [
    "PREFIX",
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
PANELS = f"{PREFIX}/p"  # room panel ⇄ room controller


def device_writes(device: str) -> str:
    return f"{DEVICES}/{device}/#"


def device_reads(device: str) -> list[str]:
    return [f"{COMMANDS}/{device}/#", f"{REPLIES}/{device}/#"]


def store_reads() -> str:
    return f"{DEVICES}/#"


def store_writes() -> list[str]:
    return [f"{COMMANDS}/#", f"{REPLIES}/#"]


def panel_filter(room: str) -> str:
    return f"{PANELS}/{room}/#"

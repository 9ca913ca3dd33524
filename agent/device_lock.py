"""The device lock: one sealer per chain, since two would fork it.

``DATA/private/agent.lock`` is held with ``flock`` by the recorder while it runs
(:func:`hold_lock`, refused with :class:`RecorderBusy`) and by each agent command that
appends to the chain (:func:`agent.enrolment.locked`), so the two exclude each other.

Example::

    fd = hold_lock(root)   # RecorderBusy if another process writes this chain
    ...
    os.close(fd)           # released
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from evidence.layout import PRIVATE

LOCK = "agent.lock"


class RecorderBusy(RuntimeError):
    """Another process (a recorder, or an agent command) is writing this device's chain."""


def hold_lock(root: Path) -> int:
    (root / PRIVATE).mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / PRIVATE / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RecorderBusy(f"{root} is in use by another agent process") from None
    return fd

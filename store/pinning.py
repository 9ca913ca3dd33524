"""Which store worker serves which device: one device, one worker at a time.

Workers of a group beat a heartbeat into the store's database; each device belongs to one
live worker, chosen by rendezvous hashing on the device id and the workers' names, and
only that worker subscribes to the device's topics. A device's messages are therefore
never split between workers. When a worker stops beating for ``DEAD`` seconds the others
take its devices (and hand them back when it returns): only the devices of the worker that
came or went move. Pure: the worker (:mod:`store.worker`) does the subscribing.

Example::

    owner("bwc-1", ["store-1", "store-2"])                 # -> 'store-2' (say)
    assignment("store-1", devices, alive({"store-1": 10.0, "store-2": 1.0}, now=12.0))
    # -> every device: store-2 has not beaten for 11 s
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

HEARTBEAT = 2.0  # seconds between a worker's heartbeats (and looks at who is alive)
DEAD = 3 * HEARTBEAT  # a worker not heard of for this long has its devices taken over


def owner(device: str, workers: Iterable[str]) -> str | None:
    """The worker that serves ``device`` (None: no worker is alive)."""
    return max(
        workers,
        key=lambda w: hashlib.sha256(f"{w}\0{device}".encode()).digest(),
        default=None,
    )


def alive(heartbeats: Mapping[str, float], now: float) -> list[str]:
    """The workers heard of within ``DEAD`` seconds of ``now``."""
    return sorted(w for w, at in heartbeats.items() if now - at <= DEAD)


def assignment(me: str, devices: Iterable[str], workers: Iterable[str]) -> set[str]:
    """The devices worker ``me`` serves, of ``devices``, among the live ``workers`` (``me``
    counts as alive: it is asking)."""
    pool = sorted({*workers, me})
    return {d for d in devices if owner(d, pool) == me}


def maybe_running(seen: float | None, now: float) -> bool:
    """Whether a worker's name was heard of recently enough that another worker may be
    running under it (a heartbeat within ``DEAD`` seconds)."""
    return seen is not None and now - seen <= DEAD


def name_in_use(
    name: str, group: str, before: float | None, after: float | None, now: float
) -> str | None:
    """Why a worker must not start under ``name``: its heartbeat, read at start
    (``before``) and a heartbeat later (``after``), moved on — another worker beats under
    it. A heartbeat that stood still is a worker that just stopped: the name is free."""
    if before is None or after is None or after <= before or not maybe_running(after, now):
        return None
    return (
        f"a store worker named {name} is already running in group {group} "
        f"(last seen {max(0.0, now - after):.0f} s ago): give this one another name in store.toml"
    )

"""When the uploader sends: the clocks it decides by, without sockets, threads or disks.

:class:`Silence` says when the store has gone quiet (ask again), :class:`Pacer` keeps to
the bandwidth cap, :class:`Every` is a repeating deadline (the status), :class:`ScanSchedule`
says when the journal is worth reading, and :class:`PanelEcho` when to repeat the room
panel's state. :mod:`agent.sync_plan` and :mod:`agent.uplink` own one each.

Example::

    every = Every(5.0)
    every.due(now=0.0)   # True
    every.due(now=1.0)   # False: not 5 seconds yet
"""

from __future__ import annotations

from dataclasses import dataclass

SCAN_SECONDS = 0.1  # how often the journal is read for newly sealed entries
PANEL_REPEAT = 5.0  # seconds between repeats of a room panel's state


@dataclass
class Silence:
    """Whether the store has said nothing for ``retry_seconds``: then ask again. While it
    answers anything it is busy, not deaf: resending would only add to its queue."""

    retry_seconds: float
    last_reply: float = 0.0

    def heard(self, now: float) -> None:
        self.last_reply = now

    def quiet(self, since: float, now: float) -> bool:
        return now - max(since, self.last_reply) > self.retry_seconds


@dataclass
class Pacer:
    """Token bucket for the optional bandwidth cap (bytes per second; None: no cap).
    A chunk larger than the bucket goes once the bucket is full."""

    bandwidth: int | None
    tokens: float = 0.0
    at: float = 0.0

    def spend(self, n: int, now: float) -> bool:
        cap = self.bandwidth
        if cap is None:
            return True
        self.tokens = min(float(cap), self.tokens + (now - self.at) * cap)
        self.at = now
        if self.tokens < n and self.tokens < cap:
            return False
        self.tokens -= n
        return True


@dataclass
class Every:
    """A repeating deadline: ``due`` answers True at most once every ``seconds``."""

    seconds: float
    last: float = 0.0

    def due(self, now: float, force: bool = False) -> bool:
        if not force and now - self.last < self.seconds:
            return False
        self.last = now
        return True


@dataclass
class ScanSchedule:
    """When to read the journal for what to send. Reading it is the costly part: do it
    when something was acknowledged or receipted (``wake``), or when a glance at the newest
    sequence number, at most every SCAN_SECONDS, shows news (the recorder seals on its own
    thread), or sent entries wait for a store gone quiet."""

    rescan: bool = True
    next_glance: float = 0.0
    head: int = 0  # the newest entry seen

    def wake(self) -> None:
        self.rescan = True

    def glance_due(self, now: float) -> bool:
        if self.rescan or now < self.next_glance:
            return False
        self.next_glance = now + SCAN_SECONDS
        return True

    def glanced(self, head: int, waiting: bool) -> None:
        self.rescan = head != self.head or waiting
        self.head = head

    def take(self) -> bool:
        """Whether to scan now (and the wish is then used up)."""
        due, self.rescan = self.rescan, False
        return due


@dataclass
class PanelEcho:
    """What the room panel shows, sent on change and repeated every PANEL_REPEAT seconds:
    a panel stops believing a state not repeated, so a controller that died does not leave
    the RECORDING lamp lit."""

    state: str | None = None  # the last state shown; resent on reconnect
    sent_at: float = 0.0

    def show(self, state: str, now: float, connected: bool) -> bool:
        """Whether to publish ``state`` now."""
        if state == self.state and now - self.sent_at < PANEL_REPEAT:
            return False
        self.state = state
        if not connected:
            return False
        self.sent_at = now
        return True
